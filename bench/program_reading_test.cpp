// ws-bench's program scenarios: reading /proc/PID/stat, the lines of `seq`
// and pids, client frames and the upgrade response's status. No sockets.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "program_scenarios.hpp"

using agentws::bench::client_frame;
using agentws::bench::http_status;
using agentws::bench::parse_decimal_line;
using agentws::bench::parse_proc_stat;

TEST_CASE("parse_proc_stat reads ppid and the CPU ticks after the last parenthesis", "[bench]") {
  // A command name with a space and a ')' in it, as the kernel writes it.
  const std::string text =
      "4242 (ws server) x) S 17 4242 17 0 -1 4194560 900 0 0 0 1234 567 89 10 20 0 5 0 "
      "123456 1000000 300 18446744073709551615";
  const auto stat = parse_proc_stat(text);
  REQUIRE(stat);
  CHECK(stat->ppid == 17);
  CHECK(stat->utime == 1234);
  CHECK(stat->stime == 567);
  CHECK(stat->cutime == 89);
  CHECK(stat->cstime == 10);
}

TEST_CASE("parse_proc_stat refuses cut or malformed lines", "[bench]") {
  CHECK_FALSE(parse_proc_stat(""));
  CHECK_FALSE(parse_proc_stat("4242 sleep S 1 2 3"));                  // no ')'
  CHECK_FALSE(parse_proc_stat("4242 (sleep) S 1 4242 1 0 -1 0 0 0"));  // ends before utime
  CHECK_FALSE(parse_proc_stat("4242 (sleep) S x 4242 1 0 -1 0 0 0 0 0 1 2 3 4"));
  CHECK_FALSE(parse_proc_stat("4242 (sleep) S 1 4242 1 0 -1 0 0 0 0 0 1 2 3 -4"));
}

TEST_CASE("parse_proc_stat reads this process's own stat", "[bench]") {
  std::FILE* file = std::fopen("/proc/self/stat", "r");
  REQUIRE(file);
  char line[1024] = {};
  const bool read = std::fgets(line, sizeof line, file) != nullptr;
  std::fclose(file);
  REQUIRE(read);
  const auto stat = parse_proc_stat(line);
  REQUIRE(stat);
  CHECK(stat->ppid == static_cast<int>(getppid()));
}

TEST_CASE("parse_decimal_line reads seq's lines and pids only", "[bench]") {
  CHECK(parse_decimal_line("1") == std::uint64_t{1});
  CHECK(parse_decimal_line("100000") == std::uint64_t{100000});
  CHECK(parse_decimal_line("9999999999999999999") == std::uint64_t{9999999999999999999u});
  CHECK_FALSE(parse_decimal_line(""));
  CHECK_FALSE(parse_decimal_line("-1"));
  CHECK_FALSE(parse_decimal_line("+1"));
  CHECK_FALSE(parse_decimal_line(" 1"));
  CHECK_FALSE(parse_decimal_line("1\n"));
  CHECK_FALSE(parse_decimal_line("12a"));
  CHECK_FALSE(parse_decimal_line("18446744073709551616"));  // 20 digits
}

namespace {
// The payload of a client frame, unmasked (what a server reads).
std::string unmask(const std::string& frame, std::size_t header) {
  std::string payload;
  for (std::size_t i = header; i < frame.size(); ++i)
    payload.push_back(static_cast<char>(frame[i] ^ frame[header - 4 + (i - header) % 4]));
  return payload;
}
}  // namespace

TEST_CASE("client_frame writes masked frames of every length encoding", "[bench]") {
  const std::string small = client_frame(0x1, "hello", 0x01020304u);
  REQUIRE(small.size() == 2 + 4 + 5);
  CHECK(static_cast<unsigned char>(small[0]) == 0x81);  // FIN, text
  CHECK(static_cast<unsigned char>(small[1]) == (0x80 | 5));
  CHECK(small.substr(2, 4) == std::string("\x01\x02\x03\x04", 4));
  CHECK(unmask(small, 6) == "hello");

  const std::string medium_payload(300, 'm');
  const std::string medium = client_frame(0x1, medium_payload, 0xdeadbeefu);
  CHECK(static_cast<unsigned char>(medium[1]) == (0x80 | 126));
  CHECK(static_cast<unsigned char>(medium[2]) == 1);
  CHECK(static_cast<unsigned char>(medium[3]) == 300 - 256);
  CHECK(unmask(medium, 8) == medium_payload);

  const std::string large_payload(70'000, 'l');
  const std::string large = client_frame(0x1, large_payload, 0x0badf00du);
  CHECK(static_cast<unsigned char>(large[1]) == (0x80 | 127));
  CHECK(unmask(large, 14) == large_payload);

  const std::string close = client_frame(0x8, std::string_view("\x03\xe8", 2), 0);
  CHECK(static_cast<unsigned char>(close[0]) == 0x88);
  CHECK(unmask(close, 6) == std::string("\x03\xe8", 2));
}

TEST_CASE("http_status reads the status of a response head", "[bench]") {
  CHECK(http_status("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n") == 101);
  CHECK(http_status("HTTP/1.1 403 Forbidden\r\n\r\n") == 403);
  CHECK(http_status("HTTP/1.0 101 x\r\n") == 0);
  CHECK(http_status("HTTP/1.1 1") == 0);
  CHECK(http_status("HTTP/1.1 abc ok") == 0);
}

// ws-client's command line, read without starting anything: every number in
// its range, run ids that a run can wait for, headers the handshake can carry.
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "agentws/client_options.hpp"

namespace {

using namespace std::chrono_literals;

agentws::client_command_line parse(std::vector<std::string> arguments,
                                   const char* env_token = nullptr) {
  std::vector<const char*> argv{"ws-client"};
  for (const auto& argument : arguments)
    argv.push_back(argument.c_str());
  return agentws::parse_client_command_line(static_cast<int>(argv.size()), argv.data(), "9.8.7",
                                            env_token);
}

// Refused with exit 2 and `message` among the errors.
void check_refused(std::vector<std::string> arguments, const std::string& message) {
  const agentws::client_command_line result = parse(arguments);
  INFO("arguments: " << Catch::Detail::stringify(arguments));
  INFO("errors: " << result.errors);
  CHECK_FALSE(result.options);
  CHECK(result.exit_status == 2);
  CHECK(result.errors.find(message) != std::string::npos);
}

// A file holding `content` for --input @FILE, removed with the object.
struct temporary_file {
  explicit temporary_file(const std::string& content) {
    char name[] = "/tmp/ws-client-input-XXXXXX";
    const int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    close(fd);
    path = name;
    std::ofstream(path, std::ios::binary) << content;
  }
  ~temporary_file() { std::remove(path.c_str()); }
  temporary_file(const temporary_file&) = delete;
  temporary_file& operator=(const temporary_file&) = delete;
  std::string path;
};

}  // namespace

TEST_CASE("ws-client's defaults lie within the ranges", "[protocol][client_options]") {
  const agentws::client_command_line result = parse({});
  REQUIRE(result.options);
  const agentws::client_options& chosen = *result.options;
  CHECK(chosen.plan.url == "ws://localhost:8000/ws");
  CHECK(chosen.plan.runs == std::vector<std::string>{"run-001", "run-002"});
  REQUIRE(chosen.plan.cancels.size() == 1);
  CHECK(chosen.plan.cancels[0].after == 2500ms);
  CHECK(chosen.plan.timeout == 60'000ms);
  CHECK_FALSE(chosen.timeout_given);
  CHECK_FALSE(chosen.plan.params.steps);
  // Nothing a version 1 server does not know is sent unless asked for.
  CHECK(chosen.plan.agent.empty());
  CHECK_FALSE(chosen.interactive);
  CHECK(chosen.color == "auto");
  // The default timeout is inside the range --timeout is checked against.
  CHECK(60.0 >= agentws::client_ranges::timeout_seconds.min);
  CHECK(60.0 <= agentws::client_ranges::timeout_seconds.max);
  CHECK(2.5 <= agentws::client_ranges::cancel_seconds.max);
}

TEST_CASE("ws-client reads numbers at the edges of their ranges", "[protocol][client_options]") {
  auto result = parse({"--steps", "0", "--interval-ms", "86400000", "--timeout", "0.001"});
  REQUIRE(result.options);
  CHECK(result.options->plan.params.steps == 0u);
  CHECK(result.options->plan.params.interval_ms == 86'400'000u);
  CHECK(result.options->plan.timeout == 1ms);
  CHECK(result.options->timeout_given);

  result = parse({"--steps", "9007199254740991", "--interval-ms=0", "--timeout", "31536000"});
  REQUIRE(result.options);
  CHECK(result.options->plan.params.steps == 9'007'199'254'740'991u);
  CHECK(result.options->plan.params.interval_ms == 0u);
  CHECK(result.options->plan.timeout == 31'536'000'000ms);
}

TEST_CASE("ws-client refuses numbers outside their ranges", "[protocol][client_options]") {
  for (const std::string value :
       {"-1", "abc", "", "1x", " 5", "5.0", "1e3", "9007199254740992", "18446744073709551616"}) {
    check_refused({"--steps", value},
                  "--steps: '" + value + "' is not an integer from 0 to 9007199254740991");
  }
  for (const std::string value : {"-5", "86400001", "x", ""}) {
    check_refused({"--interval-ms", value},
                  "--interval-ms: '" + value + "' is not an integer from 0 to 86400000");
  }
  for (const std::string value : {"0", "-1", "nan", "inf", "1e3", "", "0.0001", "31536001", "1s"}) {
    check_refused({"--timeout", value},
                  "--timeout: '" + value + "' is not a number from 0.001 to 31536000");
  }
  check_refused({"--steps="}, "--steps: '' is not an integer from 0 to 9007199254740991");
  // Every problem at once.
  const auto both = parse({"--steps", "-1", "--timeout", "0"});
  CHECK(both.errors.find("--steps: '-1'") != std::string::npos);
  CHECK(both.errors.find("--timeout: '0'") != std::string::npos);
}

TEST_CASE("ws-client refuses runs no run could wait for", "[protocol][client_options]") {
  check_refused({"--run", "a", "--run", "a"}, "--run: 'a' is given twice");
  check_refused({"--run", ""}, "--run: '': the run_id is empty");
  check_refused({"--run", std::string(257, 'x')}, "the run_id is 257 bytes, longer than 256");
  CHECK(parse({"--run", std::string(256, 'x')}).options);
  check_refused({"--run", "a", "--cancel", "b@1"}, "--cancel: 'b@1': b is not one of the runs");
  check_refused({"--cancel", "run-009@1"}, "run-009 is not one of the runs");
  check_refused({"--run", "a", "--cancel", "a@1", "--cancel", "a@2"}, "a is already cancelled");
  for (const std::string value : {"a", "a@", "@1", "a@-1", "a@nan", "a@1e1", "a@31536001"}) {
    check_refused({"--run", "a", "--cancel", value}, "--cancel: '" + value + "' is not RUN_ID@");
  }
  const auto cancel = parse({"--run", "a@b", "--cancel", "a@b@0.25"});
  REQUIRE(cancel.options);
  REQUIRE(cancel.options->plan.cancels.size() == 1);
  CHECK(cancel.options->plan.cancels[0].run_id == "a@b");
  CHECK(cancel.options->plan.cancels[0].after == 250ms);
}

TEST_CASE("ws-client's modes and their options", "[protocol][client_options]") {
  check_refused({"-i", "--run", "a"}, "with -i, type start, cancel and attach");
  check_refused({"-i", "--attach", "a"}, "with -i, type start, cancel and attach");
  check_refused({"--color", "blue"}, "--color: 'blue' is not auto, always or never");
  check_refused({"--url", "http://x/ws"}, "--url: 'http://x/ws': the URL must start with ws://");
  check_refused({"8000"}, "positional");
  check_refused({"--no-such-option"}, "no-such-option");

  auto interactive = parse({"-i", "--reconnect", "--steps", "3", "--timeout", "5"});
  REQUIRE(interactive.options);
  CHECK(interactive.options->interactive);
  CHECK(interactive.options->reconnect);
  CHECK(interactive.options->timeout_given);
  CHECK(interactive.options->plan.params.steps == 3u);

  const auto version = parse({"--version"});
  CHECK(version.exit_status == 0);
  CHECK(version.output == "ws-client 9.8.7\n");
  const auto help = parse({"--help"});
  CHECK(help.exit_status == 0);
  CHECK(help.output.find("--header") != std::string::npos);
  CHECK(help.output.find("quit!") != std::string::npos);
}

TEST_CASE("ws-client's token, headers and origin", "[protocol][client_options]") {
  auto result = parse({}, "from-env");
  REQUIRE(result.options);
  CHECK(result.options->plan.token == "from-env");
  result = parse({"--token", "given"}, "from-env");
  REQUIRE(result.options);
  CHECK(result.options->plan.token == "given");

  result = parse({"--header", "X-Trace:  abc ", "--header", "Authorization: Bearer t", "--origin",
                  "https://app.example.com"});
  REQUIRE(result.options);
  using header = std::pair<std::string, std::string>;
  CHECK(result.options->plan.headers ==
        std::vector<header>{{"X-Trace", "abc"}, {"Authorization", "Bearer t"}});
  CHECK(result.options->plan.origin == "https://app.example.com");

  check_refused({"--header", "no colon"}, "--header: 'no colon' is not 'Name: value'");
  check_refused({"--header", ": v"}, "is not 'Name: value'");
  check_refused({"--header", "Bad Name: v"}, "a name has no blanks");
  check_refused({"--header", "X: a\rb"}, "the value holds control characters");
  check_refused({"--header", "upgrade: h2c"}, "upgrade is set by the WebSocket handshake");
  check_refused({"--header", "Sec-WebSocket-Key: x"}, "is set by the WebSocket handshake");
  check_refused({"--origin", "example.com"}, "--origin: 'example.com' is not an origin");
  check_refused({"--origin", "https://example.com/path"}, "is not an origin");
}

TEST_CASE("ws-client resumes: --reconnect, --session and --attach", "[protocol][client_options]") {
  // A scenario reconnects too: its runs are resumed when the server can.
  auto scenario = parse({"--reconnect", "--run", "a"});
  REQUIRE(scenario.options);
  CHECK(scenario.options->reconnect);
  CHECK(scenario.options->plan.reconnect);
  CHECK(scenario.options->plan.announce_session);
  auto json = parse({"--json"});
  REQUIRE(json.options);
  CHECK_FALSE(json.options->plan.announce_session);  // the connected event carries the key

  auto attach = parse({"--session", "k3y", "--attach", "r1@17", "--attach", "r2"});
  REQUIRE(attach.options);
  const agentws::scenario& plan = attach.options->plan;
  CHECK(plan.session == "k3y");
  CHECK(plan.runs.empty());  // attaching replaces the default runs and their cancel
  CHECK(plan.cancels.empty());
  REQUIRE(plan.attaches.size() == 2);
  CHECK(plan.attaches[0].run_id == "r1");
  CHECK(plan.attaches[0].after_seq == 17);
  CHECK(plan.attaches[1].after_seq == -1);
  auto both = parse({"--run", "a", "--attach", "b@3"});
  REQUIRE(both.options);
  CHECK(both.options->plan.runs == std::vector<std::string>{"a"});
  CHECK(both.options->plan.attaches.size() == 1);

  check_refused({"--attach", "r@x"}, "--attach: 'r@x' is not RUN or RUN@SEQ");
  check_refused({"--attach", "r@-2"}, "--attach: 'r@-2' is not RUN or RUN@SEQ");
  check_refused({"--attach", "@4"}, "--attach: '@4': the run_id is empty");
  check_refused({"--attach", "r", "--attach", "r@3"}, "--attach: 'r@3': r is attached twice");
  check_refused({"--run", "r", "--attach", "r"}, "r is started too (--run)");
  check_refused({"--session", ""}, "--session: the key is empty");
  check_refused({"--session", "a b"}, "--session: a key is made of visible ASCII characters");
  const auto help = parse({"--help"});
  CHECK(help.output.find("--attach") != std::string::npos);
  CHECK(help.output.find("detach_grace_ms 60000") != std::string::npos);
}

TEST_CASE("ws-client --agent --input and --timeout-ms", "[protocol][client_options]") {
  auto result = parse(
      {"--agent", "echo", "--input", R"( {"text": "hello", "n": [1, 2.5]} )", "--timeout-ms", "1"});
  REQUIRE(result.options);
  const agentws::agent_request& agent = result.options->plan.agent;
  CHECK(agent.agent == "echo");
  // Kept as compact JSON, the value unchanged.
  CHECK(agent.input_json == R"({"n":[1,2.5],"text":"hello"})");
  CHECK(agent.timeout_ms == 1u);

  CHECK(parse({"--input", "\"just a string\""}).options->plan.agent.input_json ==
        "\"just a string\"");
  CHECK(parse({"--input", "42"}).options->plan.agent.input_json == "42");
  CHECK(parse({"--timeout-ms", "86400000"}).options->plan.agent.timeout_ms == 86'400'000u);
  CHECK(parse({"--agent", std::string(128, 'a')}).options->plan.agent.agent->size() == 128);
  // Each alone: the others stay unset, so they are not sent.
  const auto only_agent = parse({"--agent", "echo"});
  REQUIRE(only_agent.options);
  CHECK_FALSE(only_agent.options->plan.agent.input_json);
  CHECK_FALSE(only_agent.options->plan.agent.timeout_ms);
  // With -i they are the defaults of start.
  CHECK(parse({"-i", "--agent", "echo", "--input", "{}"}).options->plan.agent.input_json == "{}");

  check_refused({"--agent", ""}, "--agent: the name is empty");
  check_refused({"--agent", std::string(129, 'a')}, "bytes, longer than 128");
  for (const std::string value : {"0", "-1", "86400001", "x", "1.5", ""}) {
    check_refused({"--timeout-ms", value},
                  "--timeout-ms: '" + value + "' is not an integer from 1 to 86400000");
  }
  check_refused({"--input", "hello"}, "--input: 'hello' is not JSON: parse error at line 1");
  check_refused({"--input", "{\"a\": 1"}, "--input: '{\"a\": 1' is not JSON");
  check_refused({"--input", ""}, "--input: '' is not JSON");
  check_refused({"--input", "1 2"}, "--input: '1 2' is not JSON");
  check_refused({"--input", std::string(64, '[') + std::string(64, ']')},
                "is nested deeper than 63 levels");
  CHECK(parse({"--input", std::string(63, '[') + std::string(63, ']')}).options);
  // Every problem at once.
  const auto all = parse({"--agent", "", "--input", "x", "--timeout-ms", "0"});
  CHECK(all.errors.find("--agent:") != std::string::npos);
  CHECK(all.errors.find("--input:") != std::string::npos);
  CHECK(all.errors.find("--timeout-ms:") != std::string::npos);

  const auto help = parse({"--help"});
  CHECK(help.output.find("--agent") != std::string::npos);
  CHECK(help.output.find("@FILE") != std::string::npos);
  CHECK(help.output.find("send ID JSON") != std::string::npos);
}

TEST_CASE("ws-client --input @FILE reads the JSON in FILE", "[protocol][client_options]") {
  const temporary_file task("{\n  \"prompt\": \"two\\nlines\",\n  \"limit\": 3\n}\n");
  const auto result = parse({"--input", "@" + task.path});
  REQUIRE(result.options);
  CHECK(result.options->plan.agent.input_json == R"({"limit":3,"prompt":"two\nlines"})");

  const temporary_file broken("{\"prompt\": ");
  check_refused({"--input", "@" + broken.path}, "--input: " + broken.path + " is not JSON");
  check_refused({"--input", "@/nonexistent/task.json"},
                "--input: /nonexistent/task.json: cannot open it (No such file or directory)");
  check_refused({"--input", "@"}, "--input: '@' names no file");

  // 16 MiB is read; a byte more is refused before it is parsed.
  const std::size_t limit = agentws::max_input_file_bytes;
  const temporary_file largest("\"" + std::string(limit - 2, 'x') + "\"");
  const auto read = parse({"--input", "@" + largest.path});
  REQUIRE(read.options);
  CHECK(read.options->plan.agent.input_json->size() == limit);
  const temporary_file too_large("\"" + std::string(limit - 1, 'x') + "\"");
  check_refused({"--input", "@" + too_large.path},
                "--input: " + too_large.path + ": larger than 16 MiB");
}

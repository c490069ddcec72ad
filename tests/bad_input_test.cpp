// Bad input: one case per way a peer can get the protocol wrong, from the
// HTTP request line to the run lifecycle. Each case asserts the exact answer
// (HTTP status, close code, or error message and code), then that the same
// connection, when it survives, still completes a run, and that a run on
// another connection, started before the bad input, streams every step in
// order to its end.
#include <catch2/catch.hpp>

#include <boost/asio/awaitable.hpp>

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentws/agent.hpp"
#include "agentws/events.hpp"
#include "raw_peer.hpp"
#include "test_peer.hpp"

using namespace agentws;
using namespace agentws::testing;
using namespace std::string_literals;

namespace {

std::set<std::string> keys_of(const json& object) {
  std::set<std::string> keys;
  for (const auto& item : object.items())
    keys.insert(item.key());
  return keys;
}

// Long or binary inputs, shortened and escaped for failure messages.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 160)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else {
      out += c;
    }
  }
  if (text.size() > 160) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

// A run on a connection of its own, started before the bad input and read
// after it: it must stream every step in order, end with run_done, and see
// nothing else.
class bystander {
 public:
  explicit bystander(std::uint16_t port, int steps = 4, int interval_ms = 10)
      : peer_(port), steps_(steps) {
    peer_.expect_event("connected");
    peer_.send_command(start("bystander", steps, interval_ms));
    peer_.expect_event("run_started");
  }
  void finish() {
    INFO("the bystander's run");
    std::vector<json> events = peer_.events_until_terminal("bystander");
    CHECK(steps_of(events) == iota_steps(static_cast<std::uint64_t>(steps_)));
    CHECK(events.back()["event_type"] == "run_done");
    CHECK(peer_.stash.empty());
  }

 private:
  test_peer peer_;
  int steps_;
};

// A connection opened after the bad input completes a run.
void check_fresh_connection_serves(std::uint16_t port) {
  INFO("a fresh connection after the bad input");
  test_peer peer(port);
  peer.expect_event("connected");
  peer.run_to_completion("fresh");
}

// REQUIREs an error event with this message and code; returns its payload.
json check_error(const json& event, std::string_view message, std::string_view code) {
  INFO("event: " << event.dump());
  REQUIRE(event["event_type"] == "error");
  CHECK(event["payload"]["message"] == message);
  CHECK(event["payload"]["code"] == code);
  return event["payload"];
}

// One refused command: the frame sent, the exact answer, and the exact set
// of payload fields (besides "message" and "code").
struct refusal {
  std::string frame;
  std::string message;
  std::string code;
  std::set<std::string> more_keys = {};
  json expected_run_id = nullptr;  // when "run_id" is among more_keys
};

// Sends each frame on one connection, each with its own bystander: the error
// is exact, and the connection then completes a run.
void expect_refusals(const std::vector<refusal>& cases, server_config config = test_config()) {
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  for (const auto& c : cases) {
    INFO("frame: " << shown(c.frame));
    bystander other(server.port());
    peer.send_text(c.frame);
    const json payload = check_error(peer.expect_event("error"), c.message, c.code);
    std::set<std::string> keys = c.more_keys;
    keys.insert({"message", "code"});
    CHECK(keys_of(payload) == keys);
    if (c.more_keys.contains("run_id")) CHECK(payload["run_id"] == c.expected_run_id);
    peer.run_to_completion("after");
    other.finish();
  }
}

// Sends `frame` and REQUIREs that it starts `run_id`, which then streams
// `steps` steps and ends with run_done. Returns the run's events.
std::vector<json> expect_accepted(test_peer& peer, std::string_view frame, std::string_view run_id,
                                  int steps) {
  INFO("frame: " << shown(frame));
  peer.send_text(frame);
  std::vector<json> events = peer.events_until_terminal(run_id);
  CHECK(peer.stash.empty());
  REQUIRE(events.front()["event_type"] == "run_started");
  CHECK(steps_of(events) == iota_steps(static_cast<std::uint64_t>(steps)));
  CHECK(events.back()["event_type"] == "run_done");
  return events;
}

// Sends a raw HTTP request on its own connection; the answer, after
// REQUIRing that the server then closed the connection.
http_answer answer_to(std::uint16_t port, std::string_view request) {
  raw_peer peer(port);
  // The server may answer and close before it read everything (431): a
  // failed write is not a failure here, a missing answer is.
  (void)peer.write(request);
  std::optional<http_answer> answer = peer.read_http_answer();
  INFO("request: " << shown(request));
  REQUIRE(answer);
  INFO("answer: " << answer->head);
  CHECK(peer.wait_for_end(2000ms));
  return *answer;
}

std::string repeat(std::string_view unit, std::size_t times) {
  std::string out;
  out.reserve(unit.size() * times);
  for (std::size_t i = 0; i < times; ++i)
    out.append(unit);
  return out;
}

// A text frame as a client sends it (masked).
std::string frame_text(std::string_view text, bool fin = true) {
  return make_frame(ws_op::text, text, fin);
}

}  // namespace

// ---------------------------------------------------------------- HTTP ----

TEST_CASE("HTTP: an unknown path answers 404 and closes", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  for (const char* path : {"/nope", "/ws/", "/wsx", "/WS", "/health/x", "//ws"}) {
    INFO(path);
    http_answer answer = answer_to(
        server.port(), std::string("GET ") + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    CHECK(answer.status == 404);
    CHECK(answer.body == "Not Found\n");
    CHECK(answer.header("Connection") == "close");
  }
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: POST /health answers 405 with Allow", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  http_answer answer = answer_to(
      server.port(), "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}");
  CHECK(answer.status == 405);
  CHECK(answer.header("Allow") == "GET, HEAD");
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: an upgrade on a wrong path answers 404", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  for (const char* path : {"/nope", "/ws/", "/wss", "/x/ws", "/WS"}) {
    INFO(path);
    http_answer answer = answer_to(server.port(), upgrade_request(path));
    CHECK(answer.status == 404);
    CHECK_FALSE(answer.header("Sec-WebSocket-Accept"));
  }
  CHECK(server.get().stats().connections_total == 1);  // the bystander only
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: an upgrade on /ws with a query string is accepted", "[bad_input]") {
  server_fixture server;
  raw_peer peer(server.port());
  std::optional<http_answer> answer = peer.upgrade("/ws?token=abc&x=%00");
  REQUIRE(answer);
  CHECK(answer->status == 101);
  peer.expect_event("connected");
  peer.run_to_completion("query");
}

TEST_CASE("HTTP: a plain GET /ws answers 426", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  http_answer answer = answer_to(server.port(), "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  CHECK(answer.status == 426);
  CHECK(answer.header("Upgrade") == "websocket");
  CHECK(answer.header("Sec-WebSocket-Version") == "13");
  // Upgrade without "Connection: upgrade" is no upgrade either.
  answer =
      answer_to(server.port(), "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n");
  CHECK(answer.status == 426);
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: a wrong Sec-WebSocket-Version answers 426", "[bad_input]") {
  server_config config = test_config();
  config.max_connections = 2;  // a leaked slot would turn the fresh connection into a 503
  server_fixture server(config);
  bystander other(server.port());
  for (const char* version : {"12", "8", "14", "13, 8", "abc"}) {
    INFO(version);
    const std::string request =
        std::string(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: ") +
        version + "\r\n\r\n";
    http_answer answer = answer_to(server.port(), request);
    // RFC 6455 4.4 allows either; Beast answers 426 and names the version.
    CHECK((answer.status == 426 || answer.status == 400));
    CHECK(answer.status == 426);
    CHECK(answer.header("Sec-WebSocket-Version") == "13");
  }
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.connections_open == 1; }));
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: a missing Sec-WebSocket-Version or Key answers 400", "[bad_input]") {
  server_config config = test_config();
  config.max_connections = 2;
  server_fixture server(config);
  bystander other(server.port());
  const std::string head =
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  for (const std::string& missing :
       {head + "Sec-WebSocket-Version: 13\r\n\r\n",
        head + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"}) {
    http_answer answer = answer_to(server.port(), missing);
    CHECK(answer.status == 400);
  }
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.connections_open == 1; }));
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: oversized headers answer 431", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  SECTION("one long header") {
    http_answer answer =
        answer_to(server.port(), "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                                     std::string(17 * 1024, 'a') + "\r\n\r\n");
    CHECK(answer.status == 431);
  }
  SECTION("many headers on an upgrade") {
    std::string headers;
    for (int i = 0; i < 1500; ++i)
      headers += "X-H" + std::to_string(i) + ": value\r\n";
    http_answer answer = answer_to(server.port(), upgrade_request("/ws", headers));
    CHECK(answer.status == 431);
  }
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: a garbage request line answers 400", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  const std::vector<std::string> garbage = {
      "garbage\r\n\r\n",
      "GET\r\n\r\n",
      "GET /ws\r\n\r\n",
      "GET /ws HTTP/1.1 extra\r\n\r\n",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"s,  // a TLS hello
      "GET /ws HTTP/1.1\r\nHost x\r\n\r\n",                     // no colon
  };
  for (const auto& request : garbage) {
    http_answer answer = answer_to(server.port(), request);
    CHECK(answer.status == 400);
    CHECK(answer.body == "Bad Request\n");
  }
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: a silent connection is closed by the handshake timeout", "[bad_input]") {
  server_config config = test_config();
  config.handshake_timeout = 300ms;
  server_fixture server(config);
  bystander other(server.port(), 10, 50);
  const auto begin = std::chrono::steady_clock::now();
  raw_peer silent(server.port());
  REQUIRE(silent.wait_for_end(3000ms));
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  CHECK(elapsed >= 250ms);
  CHECK(elapsed < 1500ms);
  CHECK(silent.input().empty());  // closed without an answer
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: a handshake sent one byte per 100 ms is closed by the handshake timeout",
          "[bad_input]") {
  server_config config = test_config();
  config.handshake_timeout = 300ms;
  server_fixture server(config);
  bystander other(server.port(), 10, 50);
  const std::string request = upgrade_request();
  const auto begin = std::chrono::steady_clock::now();
  raw_peer slow(server.port());
  std::size_t sent = 0;
  while (sent < request.size() && !slow.ended()) {
    if (slow.write(std::string_view(request).substr(sent, 1))) break;
    ++sent;
    slow.pump(100ms);
    REQUIRE(std::chrono::steady_clock::now() - begin < 3s);
  }
  REQUIRE(slow.wait_for_end(1000ms));
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  CHECK(elapsed >= 250ms);
  CHECK(elapsed < 1500ms);
  CHECK(sent < 20);  // nowhere near the whole request: the bytes did not extend the deadline
  CHECK(slow.input().empty());
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("HTTP: permessage-deflate offered is not negotiated", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  std::optional<http_answer> answer =
      peer.upgrade("/ws",
                   "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; "
                   "server_no_context_takeover\r\n");
  REQUIRE(answer);
  INFO(answer->head);
  CHECK(answer->status == 101);
  CHECK_FALSE(answer->header("Sec-WebSocket-Extensions"));
  peer.expect_event("connected");
  peer.run_to_completion("plain");
  // Not negotiated, so a compressed-looking frame (RSV1) is a protocol error.
  peer.send(make_frame(ws_op::text, R"({"command":"cancel_run","run_id":"x"})", true, true, 0x4));
  CHECK(peer.wait_for_close() == 1002);
  other.finish();
}

// -------------------------------------------------------------- frames ----

TEST_CASE("frames: invalid UTF-8 in a text frame closes with 1007", "[bad_input]") {
  server_fixture server;
  const std::vector<std::string> payloads = {
      "\xff",
      "\x80",              // a lone continuation byte
      "\xc0\xaf",          // overlong "/"
      "\xe0\x80\xaf",      // overlong, three bytes
      "\xed\xa0\x80",      // an encoded surrogate (U+D800)
      "\xf4\x90\x80\x80",  // past U+10FFFF
      "abc\xe2\x82",       // cut short at the end of the message
      R"({"command":"start_run","run_id":")"
      "\xe2\x82"
      R"("})",  // cut short inside
  };
  for (const auto& payload : payloads) {
    INFO("payload: " << shown(payload));
    bystander other(server.port());
    raw_peer peer(server.port());
    peer.open_websocket();
    peer.send(frame_text(payload));
    CHECK(peer.wait_for_close() == 1007);
    CHECK(peer.stash.empty());  // no error event: the frame never reached the protocol
    CHECK(peer.wait_for_end(2000ms));
    other.finish();
  }
  check_fresh_connection_serves(server.port());
}

TEST_CASE("frames: UTF-8 split across fragments is checked as one message", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  // A euro sign split between two fragments is fine...
  peer.send(frame_text(R"({"command":"start_run","run_id":")"
                       "\xe2\x82",
                       false) +
            make_frame(ws_op::continuation,
                       "\xac"
                       R"(","params":{"steps":1,"interval_ms":1}})"));
  std::vector<json> events = peer.events_until_terminal("\xe2\x82\xac");
  CHECK(events.back()["event_type"] == "run_done");
  // ...but a sequence broken across fragments is not.
  peer.send(frame_text("\xe2\x82", false) + make_frame(ws_op::continuation, "(\"x\""));
  CHECK(peer.wait_for_close() == 1007);
  other.finish();
}

TEST_CASE("frames: a fragmented message over max_message_bytes closes with 1009", "[bad_input]") {
  server_fixture server;  // the default limit: 1 MiB
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  const std::string half(512 * 1024, ' ');
  peer.send(frame_text(half, false));
  peer.send(make_frame(ws_op::continuation, half, false));  // exactly the limit so far
  (void)peer.write(make_frame(ws_op::continuation, " ", true));
  CHECK(peer.wait_for_close() == 1009);
  CHECK(peer.stash.empty());
  CHECK(peer.wait_for_end(2000ms));
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("frames: a frame header announcing more than the limit closes with 1009", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  // 2^62 bytes announced, none sent: refused from the header alone.
  std::string header = {'\x81', '\xff', '\x40', 0,      0,      0,      0,
                        0,      0,      0,      '\x01', '\x02', '\x03', '\x04'};
  peer.send(header);
  CHECK(peer.wait_for_close() == 1009);
  other.finish();
  check_fresh_connection_serves(server.port());
}

TEST_CASE("frames: fragments adding up to exactly the limit are answered", "[bad_input]") {
  server_config config = test_config();
  config.limits.max_message_bytes = 64 * 1024;
  server_fixture server(config);
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  std::string command = start("exact", 2, 1).dump();
  command.resize(config.limits.max_message_bytes, ' ');
  const std::size_t quarter = command.size() / 4;
  peer.send(frame_text(command.substr(0, quarter), false) +
            make_frame(ws_op::continuation, command.substr(quarter, quarter), false) +
            make_frame(ws_op::continuation, command.substr(2 * quarter, quarter), false) +
            make_frame(ws_op::continuation, command.substr(3 * quarter), true));
  std::vector<json> events = peer.events_until_terminal("exact");
  CHECK(steps_of(events) == iota_steps(2));
  CHECK(events.back()["event_type"] == "run_done");
  // One byte more, in one frame, is over.
  (void)peer.write(frame_text(command + " "));  // the server may stop reading at the header
  CHECK(peer.wait_for_close() == 1009);
  other.finish();
}

TEST_CASE("frames: 10k one-byte fragments forming one command are answered", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  std::string command = start("fragments", 3, 1).dump();
  command.resize(10'001, ' ');
  std::string frames = frame_text(command.substr(0, 1), false);
  for (std::size_t i = 1; i < command.size(); ++i) {
    frames += make_frame(ws_op::continuation, command.substr(i, 1), i + 1 == command.size());
  }
  peer.send(frames);
  std::vector<json> events = peer.events_until_terminal("fragments");
  CHECK(events.front()["event_type"] == "run_started");
  CHECK(steps_of(events) == iota_steps(3));
  CHECK(events.back()["event_type"] == "run_done");
  peer.run_to_completion("after");
  other.finish();
}

TEST_CASE("frames: 10k pings are all answered in order and the connection still works",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  constexpr int pings = 10'000;
  std::string frames;
  std::vector<std::string> expected;
  for (int i = 0; i < pings; ++i) {
    expected.push_back(std::to_string(i));
    frames += make_frame(ws_op::ping, expected.back());
  }
  peer.send(frames);
  // Every pong is written before the next frame is read: all come first.
  peer.run_to_completion("after-pings");
  CHECK(peer.pongs == pings);
  CHECK(peer.pong_payloads == expected);
  other.finish();
}

TEST_CASE("frames: control frames between fragments are answered and the message arrives",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  const std::string command = start("interleaved", 1, 1).dump();
  peer.send(frame_text(command.substr(0, 10), false) + make_frame(ws_op::ping, "a") +
            make_frame(ws_op::pong, "unsolicited") +
            make_frame(ws_op::continuation, command.substr(10, 10), false) +
            make_frame(ws_op::ping, "b") +
            make_frame(ws_op::continuation, command.substr(20), true));
  std::vector<json> events = peer.events_until_terminal("interleaved");
  CHECK(events.back()["event_type"] == "run_done");
  CHECK(peer.pong_payloads == std::vector<std::string>{"a", "b"});
  other.finish();
}

TEST_CASE("frames: binary frames answer unsupported_frame", "[bad_input]") {
  server_fixture server;
  raw_peer peer(server.port());
  peer.open_websocket();
  const std::string message =
      "Binary frames are not supported: send each command as a JSON text frame";
  const std::vector<std::string> binaries = {
      make_frame(ws_op::binary, R"({"command":"start_run","run_id":"bin"})"),
      make_frame(ws_op::binary, ""),
      make_frame(ws_op::binary, "\xff\x00\x01"s),
      make_frame(ws_op::binary, R"({"command":)", false) +
          make_frame(ws_op::continuation, R"("start_run","run_id":"bin"})"),
  };
  for (const auto& frames : binaries) {
    INFO(shown(frames));
    bystander other(server.port());
    peer.send(frames);
    const json payload = check_error(peer.expect_event("error"), message, "unsupported_frame");
    CHECK(keys_of(payload) == std::set<std::string>{"message", "code"});
    peer.run_to_completion("after");
    other.finish();
  }
  CHECK(server.get().stats().runs_started == 2 * binaries.size());  // no "bin" among them
}

TEST_CASE("frames: protocol violations close with 1002", "[bad_input]") {
  server_fixture server;
  const std::string command = R"({"command":"cancel_run","run_id":"x"})";
  struct violation {
    std::string name;
    std::string bytes;
    unsigned close_code;
  };
  const std::vector<violation> cases = {
      {"an unmasked frame", make_frame(ws_op::text, command, true, false), 1002},
      {"reserved data opcode 3", make_frame(0x3, command), 1002},
      {"reserved control opcode 0xB", make_frame(0xB, ""), 1002},
      {"RSV1 without an extension", make_frame(ws_op::text, command, true, true, 0x4), 1002},
      {"RSV3", make_frame(ws_op::text, command, true, true, 0x1), 1002},
      {"a continuation with nothing to continue", make_frame(ws_op::continuation, command), 1002},
      {"a new text frame inside a fragmented message", frame_text("{", false) + frame_text(command),
       1002},
      {"a new binary frame inside a fragmented message",
       frame_text("{", false) + make_frame(ws_op::binary, "x"), 1002},
      {"a fragmented ping", make_frame(ws_op::ping, "x", false), 1002},
      {"a ping over 125 bytes", make_frame(ws_op::ping, std::string(126, 'p')), 1002},
      {"a close with a one-byte payload", make_frame(ws_op::close, "x"), 1002},
      {"a close with code 1005", make_frame(ws_op::close, close_payload(1005)), 1002},
      {"a close with code 999", make_frame(ws_op::close, close_payload(999)), 1002},
      {"a close with code 1004", make_frame(ws_op::close, close_payload(1004)), 1002},
      {"a close with code 2999", make_frame(ws_op::close, close_payload(2999)), 1002},
      // Beast fails this one with 1002, not 1007.
      {"a close with an invalid UTF-8 reason",
       make_frame(ws_op::close, close_payload(1000, "\xff")), 1002},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    bystander other(server.port());
    raw_peer peer(server.port());
    peer.open_websocket();
    peer.send(c.bytes);
    CHECK(peer.wait_for_close() == c.close_code);
    CHECK(peer.stash.empty());
    CHECK(peer.wait_for_end(2000ms));
    other.finish();
  }
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.connections_open == 0; }));
  check_fresh_connection_serves(server.port());
}

TEST_CASE("frames: a client close is answered with the same code and frees the runs",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  peer.send_command(start("long", 3, 60'000));
  peer.expect_event("run_started");
  peer.send_frame(ws_op::close, close_payload(4000, "bye"));
  CHECK(peer.wait_for_close() == 4000);
  CHECK(peer.wait_for_end(2000ms));
  other.finish();
  CHECK(server.wait_for_stats([](const server_stats& s) {
    return s.runs_active == 0 && s.runs_cancelled_disconnect == 1 && s.connections_open == 1;
  }));
}

// ---------------------------------------------------------------- JSON ----

TEST_CASE("JSON: text that is not one JSON document answers invalid_json", "[bad_input]") {
  const char* invalid = "Invalid JSON";
  expect_refusals({
      {"", invalid, "invalid_json"},
      {"   \r\n\t", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x")", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x)", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x"} x)", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x"},)", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x"}{"command":"start_run","run_id":"y"})", invalid,
       "invalid_json"},
      {R"({"command":"start_run","run_id":"x"} {})", invalid, "invalid_json"},
      {R"({'command':'start_run'})", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x",})", invalid, "invalid_json"},
      {R"({"command":"start_run",/*c*/"run_id":"x"})", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x","params":{"steps":NaN}})", invalid, "invalid_json"},
      {R"({"command":"start_run","run_id":"x","params":{"steps":01}})", invalid, "invalid_json"},
      {"{\"command\":\"start_run\",\"run_id\":\"a\tb\"}", invalid, "invalid_json"},   // raw tab
      {"{\"command\":\"start_run\",\"run_id\":\"a\0b\"}"s, invalid, "invalid_json"},  // raw NUL
      {std::string("\xef\xbb\xbf") + R"({"command":"x"})",
       "Unknown command",
       "unknown_command",
       {"received"}},  // a BOM is skipped
  });
}

TEST_CASE("JSON: a document that is not an object answers invalid_command", "[bad_input]") {
  const char* message = "Command must be a JSON object";
  expect_refusals({
      {"[]", message, "invalid_command"},
      {R"([{"command":"start_run","run_id":"x"}])", message, "invalid_command"},
      {R"("start_run")", message, "invalid_command"},
      {"42", message, "invalid_command"},
      {"-1.5e3", message, "invalid_command"},
      {"null", message, "invalid_command"},
      {"true", message, "invalid_command"},
      {" false ", message, "invalid_command"},
  });
}

TEST_CASE("JSON: nesting deeper than 64 levels answers invalid_json", "[bad_input]") {
  const char* too_deep = "Invalid JSON: nested deeper than 64 levels";
  const std::string command_head = R"({"command":"start_run","run_id":"deep","x":)";
  expect_refusals({
      {repeat("[", 65) + repeat("]", 65), too_deep, "invalid_json"},
      {repeat(R"({"a":)", 65) + "1" + repeat("}", 65), too_deep, "invalid_json"},
      // The command object is level 1: 64 more is 65.
      {command_head + repeat("[", 64) + repeat("]", 64) + "}", too_deep, "invalid_json"},
      // Unbalanced and invalid, still refused by depth first.
      {repeat("[", 100), too_deep, "invalid_json"},
      // As deep as the size limit allows: 1 MiB of "[".
      {repeat("[", 1024 * 1024), too_deep, "invalid_json"},
      {repeat("[{\"a\":", 100'000), too_deep, "invalid_json"},
  });
}

TEST_CASE("JSON: nesting of exactly 64 levels is parsed", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_text(repeat("[", 64) + repeat("]", 64));
  check_error(peer.expect_event("error"), "Command must be a JSON object", "invalid_command");
  const std::string deep = repeat("[", 63) + repeat("]", 63);
  expect_accepted(
      peer,
      R"({"command":"start_run","run_id":"deep","params":{"steps":1,"interval_ms":1},"x":)" + deep +
          "}",
      "deep", 1);
  // Brackets inside strings are text, not nesting.
  const std::string brackets = repeat("[", 200);
  expect_accepted(peer,
                  R"({"command":"start_run","run_id":")" + brackets +
                      R"(","params":{"steps":1,"interval_ms":1},"y":")" + repeat("{[\\\"", 100) +
                      "\"}",
                  brackets, 1);
  peer.run_to_completion("after");
  other.finish();
}

TEST_CASE("JSON: the echo of an unknown command stays readable by the client", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  // Echoed whole up to 16 levels (the command object is the first)...
  const std::string shallow =
      R"({"command":"dance","x":)" + repeat("[", 15) + repeat("]", 15) + "}";
  peer.send_text(shallow);
  json error = peer.expect_event("error");
  CHECK(error["payload"]["received"] == json::parse(shallow));
  CHECK(agentws::parse_event(peer.last_text()).has_value());
  // ...and deeper, down to the 64-level limit, only named: the whole echo
  // would nest the error event past what a reader with our limit accepts.
  for (int levels : {16, 63}) {
    INFO(levels << " levels inside the command");
    peer.send_text(R"({"command":"dance","x":)" + repeat("[", levels) + repeat("]", levels) + "}");
    error = peer.expect_event("error");
    CHECK(error["payload"]["code"] == "unknown_command");
    CHECK(error["payload"]["received"] == json({{"command", "dance"}, {"truncated", true}}));
    CHECK(agentws::parse_event(peer.last_text()).has_value());
  }
  peer.run_to_completion("after");
  other.finish();
}

TEST_CASE("JSON: a NUL byte after the document is trailing garbage", "[bad_input]") {
  // nlohmann would stop at a NUL as at the end of the text, so "JSON, NUL,
  // anything" must be refused like any other trailing garbage.
  expect_refusals({
      {"{\"command\":\"cancel_run\",\"run_id\":\"x\"}\0 garbage"s, "Invalid JSON", "invalid_json"},
      {"{\"command\":\"cancel_run\",\"run_id\":\"x\"}\0{\"command\":\"start_run\"}"s,
       "Invalid JSON", "invalid_json"},
      {"{\"command\":\"cancel_run\",\"run_id\":\"x\"}\0"s, "Invalid JSON", "invalid_json"},
  });
}

TEST_CASE("JSON: a duplicate key at any depth answers invalid_json naming it", "[bad_input]") {
  // I-JSON (RFC 7493): whoever reads the first of two keys must not see a
  // different command than the one the server would run, so neither runs.
  expect_refusals({
      {R"({"command":"cancel_run","command":"start_run","run_id":"dup"})",
       R"(Invalid JSON: duplicate key "command")", "invalid_json"},
      {R"({"command":"start_run","run_id":"dup","params":{"steps":1,"steps":9}})",
       R"(Invalid JSON: duplicate key "steps")", "invalid_json"},
      {R"({"command":"start_run","run_id":"dup","request_id":"1","\u0072equest_id":"2"})",
       R"(Invalid JSON: duplicate key "request_id")", "invalid_json"},
  });
  // On the wire: the key quoted inside the message, escaped once more.
  server_fixture server;
  raw_peer peer(server.port());
  peer.open_websocket();
  peer.send_text(R"({"command":"start_run","run_id":"dup","run_id":"other"})");
  peer.expect_event("error");
  const std::string& text = peer.last_text();
  CHECK(text.find(R"(, "payload": {"message": "Invalid JSON: duplicate key \"run_id\"", )"
                  R"("code": "invalid_json"}})") != std::string::npos);
  CHECK(server.get().stats().runs_started == 0);
  // The same keys in sibling objects are fine.
  peer.send_text(R"({"command":"start_run","run_id":"sib","params":{"steps":1,"interval_ms":1},)"
                 R"("a":{"k":1},"b":{"k":1}})");
  CHECK(peer.expect_event("run_started")["payload"]["run_id"] == "sib");
  CHECK(peer.events_until_terminal("sib").back()["event_type"] == "run_done");
  peer.run_to_completion("after");
}

TEST_CASE("JSON: numbers that do not fit are refused", "[bad_input]") {
  const char* steps_message = "params.steps must be an integer from 0 to 10000000";
  auto with_steps = [](const std::string& steps) {
    return R"({"command":"start_run","run_id":"num","params":{"steps":)" + steps + "}}";
  };
  expect_refusals({
      // Past the range of a double: nlohmann refuses the document.
      {with_steps("1e400"), "Invalid JSON", "invalid_json"},
      {with_steps("-1e400"), "Invalid JSON", "invalid_json"},
      // 2^64 parses as a float, 2^64-1 as an integer out of range.
      {with_steps("18446744073709551616"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("18446744073709551615"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("-9223372036854775809"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps(repeat("9", 400)), "Invalid JSON", "invalid_json"},  // 1e400 again
      {with_steps(repeat("9", 30)), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("1e2"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("1.0"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("-0"), steps_message, "invalid_params", {"run_id"}, "num"},
      {with_steps("1e-400"), steps_message, "invalid_params", {"run_id"}, "num"},
  });
}

TEST_CASE("JSON: NUL and control characters in run_id are accepted and echoed escaped",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  raw_peer peer(server.port());
  peer.open_websocket();
  const std::string run_id = "ctl\x01\n\t\x1f\x00\"\\\x7f/end"s;
  const std::string escaped = R"("ctl\u0001\n\t\u001f\u0000\"\\)"
                              "\x7f"
                              R"(/end")";
  peer.send_text(R"({"command":"start_run","run_id":"ctl\u0001\n\t\u001f\u0000\"\\\u007f\/end",)"
                 R"("params":{"steps":1,"interval_ms":1}})");
  for (const char* type : {"run_started", "run_event", "run_done"}) {
    json event = peer.expect_event(type);
    CHECK(event["payload"]["run_id"] == run_id);
    CHECK(peer.last_text().find(R"("run_id": )" + escaped) != std::string::npos);
  }
  // The error path escapes the same way.
  peer.send_command(cancel(run_id));
  json error = peer.expect_event("error");
  CHECK(error["payload"]["code"] == "run_not_active");
  CHECK(error["payload"]["run_id"] == run_id);
  CHECK(peer.last_text().find(R"("run_id": )" + escaped) != std::string::npos);
  peer.run_to_completion("after");
  other.finish();
}

TEST_CASE("JSON: lone surrogates answer invalid_json and pairs are accepted", "[bad_input]") {
  auto with_run_id = [](const std::string& run_id) {
    return R"({"command":"start_run","run_id":")" + run_id + "\"}";
  };
  expect_refusals({
      {with_run_id(R"(\ud800)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\udc00)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\ud800x)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\ud800\ud800)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\udc00\ud800)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\u12)"), "Invalid JSON", "invalid_json"},
      {with_run_id(R"(\x41)"), "Invalid JSON", "invalid_json"},
  });
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  std::vector<json> events = expect_accepted(
      peer,
      R"({"command":"start_run","run_id":"\ud83d\ude00","params":{"steps":1,"interval_ms":1}})",
      "\xf0\x9f\x98\x80", 1);
  CHECK(events.front()["payload"]["run_id"] == "\xf0\x9f\x98\x80");
}

TEST_CASE("JSON: 100k keys are parsed and the unknown ones ignored", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  static constexpr char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string keys;
  for (int i = 0; i < 100'000; ++i) {
    keys += '"';
    keys += digits[i % 62];
    keys += digits[(i / 62) % 62];
    keys += digits[i / (62 * 62)];
    keys += "\":0,";
  }
  REQUIRE(keys.size() < 900 * 1024);
  expect_accepted(
      peer,
      "{" + keys + R"("command":"start_run","run_id":"keys","params":{"steps":1,"interval_ms":1}})",
      "keys", 1);
  // Too big to echo: the answer names the command and says it was cut.
  peer.send_text("{" + keys + R"("command":"dance"})");
  json error = peer.expect_event("error");
  CHECK(error["payload"]["code"] == "unknown_command");
  CHECK(error["payload"]["received"] == json({{"command", "dance"}, {"truncated", true}}));
  peer.send_text("{" + keys + R"("command":7})");
  error = peer.expect_event("error");
  CHECK(error["payload"]["received"] == json({{"truncated", true}}));
  peer.run_to_completion("after");
  other.finish();
}

// -------------------------------------------------------------- fields ----

TEST_CASE("fields: command of every wrong type answers unknown_command", "[bad_input]") {
  std::vector<refusal> cases;
  for (const char* value : {"1", "true", "null", "[]", R"(["start_run"])", "{}",
                            R"({"start_run":1})", R"("")", R"("START_RUN")", R"("start_run ")",
                            R"(" start_run")", R"("start_run\u0000")", R"("cancel-run")"}) {
    cases.push_back({std::string(R"({"command":)") + value + R"(,"run_id":"r"})",
                     "Unknown command",
                     "unknown_command",
                     {"received"}});
  }
  cases.push_back({R"({"run_id":"r"})", "Unknown command", "unknown_command", {"received"}});
  cases.push_back({"{}", "Unknown command", "unknown_command", {"received"}});
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  for (const auto& c : cases) {
    INFO(c.frame);
    bystander other(server.port());
    peer.send_text(c.frame);
    json payload = check_error(peer.expect_event("error"), c.message, c.code);
    CHECK(keys_of(payload) == std::set<std::string>{"message", "code", "received"});
    CHECK(payload["received"] == json::parse(c.frame));
    peer.run_to_completion("after");
    other.finish();
  }
}

TEST_CASE("fields: run_id of every wrong type answers missing_run_id", "[bad_input]") {
  std::vector<refusal> cases;
  for (const char* command : {"start_run", "cancel_run"}) {
    const std::string head = std::string(R"({"command":")") + command + "\"";
    for (const char* value : {"1", "0", "true", "false", "null", "[]", R"(["r"])", "{}", R"("")"}) {
      cases.push_back(
          {head + R"(,"run_id":)" + value + "}", "run_id is required", "missing_run_id"});
    }
    cases.push_back({head + "}", "run_id is required", "missing_run_id"});
    cases.push_back({head + R"(,"runid":"r"})", "run_id is required", "missing_run_id"});
    // A second run_id is no longer the one that counts: it is refused.
    cases.push_back({head + R"(,"run_id":"r","run_id":null})",
                     R"(Invalid JSON: duplicate key "run_id")", "invalid_json"});
    cases.push_back({head + R"(,"run_id":"","request_id":"q"})",
                     "run_id is required",
                     "missing_run_id",
                     {"request_id"}});
  }
  expect_refusals(cases);
}

TEST_CASE("fields: run_id length is counted in bytes up to 256", "[bad_input]") {
  const char* too_long = "run_id is longer than 256 bytes";
  expect_refusals({
      {start(std::string(257, 'r'), 1, 1).dump(), too_long, "invalid_run_id"},
      {cancel(std::string(257, 'r')).dump(), too_long, "invalid_run_id"},
      {start(repeat("\xe2\x82\xac", 86), 1, 1).dump(), too_long, "invalid_run_id"},  // 258 bytes
      {start(std::string(100'000, 'r'), 1, 1).dump(), too_long, "invalid_run_id"},
      // \u escapes count as the bytes they stand for: 129 two-byte characters.
      {R"({"command":"start_run","run_id":")" + repeat(R"(\u00e9)", 129) + "\"}", too_long,
       "invalid_run_id"},
  });
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  const std::string longest(256, 'r');
  std::vector<json> events = expect_accepted(peer, start(longest, 1, 1).dump(), longest, 1);
  CHECK(events.front()["payload"]["run_id"] == longest);
  const std::string accents = repeat("\xc3\xa9", 128);  // 256 bytes, 128 characters
  expect_accepted(peer, start(accents, 1, 1).dump(), accents, 1);
  other.finish();
}

TEST_CASE("fields: params of every wrong type answer invalid_params", "[bad_input]") {
  std::vector<refusal> cases;
  auto with_params = [](const std::string& params) {
    return R"({"command":"start_run","run_id":"p","params":)" + params + "}";
  };
  for (const char* value : {"1", "true", R"("steps")", "[]", "[1,2]", R"("{}")"}) {
    cases.push_back(
        {with_params(value), "params must be an object", "invalid_params", {"run_id"}, "p"});
  }
  const char* steps_message = "params.steps must be an integer from 0 to 10000000";
  const char* interval_message = "params.interval_ms must be an integer from 0 to 3600000";
  for (const char* value : {R"("5")", "5.0", "5.5", "-1", "true", "false", "null", "[]", "[5]",
                            "{}", "10000001", "4294967296"}) {
    cases.push_back({with_params(std::string(R"({"steps":)") + value + "}"),
                     steps_message,
                     "invalid_params",
                     {"run_id"},
                     "p"});
    cases.push_back({with_params(std::string(R"({"interval_ms":)") + value + "}"),
                     interval_message,
                     "invalid_params",
                     {"run_id"},
                     "p"});
  }
  cases.push_back({with_params(R"({"interval_ms":3600001})"),
                   interval_message,
                   "invalid_params",
                   {"run_id"},
                   "p"});
  // Both wrong: steps is named first.
  cases.push_back({with_params(R"({"interval_ms":-1,"steps":-1})"),
                   steps_message,
                   "invalid_params",
                   {"run_id"},
                   "p"});
  // request_id is echoed with the error.
  cases.push_back({R"({"command":"start_run","run_id":"p","request_id":"q","params":[]})",
                   "params must be an object",
                   "invalid_params",
                   {"run_id", "request_id"},
                   "p"});
  expect_refusals(cases);
}

TEST_CASE("fields: params at their bounds are accepted", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  // Zero steps: started and done, nothing between.
  std::vector<json> events = expect_accepted(
      peer, R"({"command":"start_run","run_id":"zero","params":{"steps":0,"interval_ms":0}})",
      "zero", 0);
  CHECK(events.size() == 2);
  // null params and an empty params object take the server defaults (5 steps).
  expect_accepted(peer, R"({"command":"start_run","run_id":"null","params":null})", "null", 5);
  expect_accepted(peer, R"({"command":"start_run","run_id":"empty","params":{}})", "empty", 5);
  // The largest values are accepted (and cancelled: they would run for ages).
  peer.send_text(
      R"({"command":"start_run","run_id":"max","params":{"steps":10000000,"interval_ms":3600000}})");
  peer.expect_event("run_started");
  CHECK(peer.expect_event("run_event")["payload"]["step"] == 0);
  peer.send_command(cancel("max"));
  CHECK(peer.expect_event("run_cancelled")["payload"]["run_id"] == "max");
  other.finish();
}

TEST_CASE("fields: request_id of every wrong type answers invalid_request_id", "[bad_input]") {
  const char* message = "request_id must be a string of at most 256 bytes";
  std::vector<refusal> cases;
  for (const std::string& value :
       {std::string("1"), std::string("null"), std::string("true"), std::string("[]"),
        std::string("{}"), "\"" + std::string(257, 'q') + "\""}) {
    cases.push_back({R"({"command":"start_run","run_id":"r","request_id":)" + value + "}",
                     message,
                     "invalid_request_id",
                     {"run_id"},
                     "r"});
    cases.push_back({R"({"command":"cancel_run","run_id":"r","request_id":)" + value + "}",
                     message,
                     "invalid_request_id",
                     {"run_id"},
                     "r"});
  }
  expect_refusals(cases);
  server_fixture server;
  test_peer peer(server.port());
  peer.expect_event("connected");
  const std::string longest(256, 'q');
  peer.send_command({{"command", "start_run"},
                     {"run_id", "r"},
                     {"request_id", longest},
                     {"params", {{"steps", 1}, {"interval_ms", 1}}}});
  CHECK(peer.expect_event("run_started")["payload"]["request_id"] == longest);
}

TEST_CASE("fields: unknown keys are ignored", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  std::vector<json> events = expect_accepted(
      peer,
      R"({"version":2,"command":"start_run","run_id":"u","extra":{"a":[1,null]},)"
      R"("params":{"steps":2,"interval_ms":1,"model":"big","steps_":-1},"event_type":"x"})",
      "u", 2);
  CHECK(keys_of(events.front()["payload"]) == std::set<std::string>{"run_id", "seq"});
  peer.send_text(R"({"command":"cancel_run","run_id":"u","force":true})");
  check_error(peer.expect_event("error"), "No active run to cancel", "run_not_active");
  other.finish();
}

// ----------------------------------------------------------- lifecycle ----

TEST_CASE("lifecycle: a duplicate start is refused and the first run goes on", "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command(start("dup", 3, 100));
  peer.expect_event("run_started");
  peer.send_text(
      R"({"command":"start_run","run_id":"dup","request_id":"again","params":{"steps":1}})");
  std::optional<json> answer;
  std::vector<json> first = {};
  for (;;) {
    answer = peer.next_event();
    REQUIRE(answer);
    if ((*answer)["event_type"] == "error") break;
    first.push_back(*answer);
  }
  const json payload = check_error(*answer, "Run already in progress", "run_already_active");
  CHECK(keys_of(payload) == std::set<std::string>{"message", "code", "run_id", "request_id"});
  CHECK(payload["run_id"] == "dup");
  CHECK(payload["request_id"] == "again");
  std::vector<json> rest = peer.events_until_terminal("dup");
  first.insert(first.end(), rest.begin(), rest.end());
  CHECK(steps_of(first) == iota_steps(3));  // the first run's, untouched
  CHECK(first.back()["event_type"] == "run_done");
  peer.run_to_completion("dup");  // and the id is free again
  other.finish();
}

TEST_CASE("lifecycle: cancel of an unknown or finished or cancelled run is refused",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port());
  test_peer peer(server.port());
  peer.expect_event("connected");
  auto expect_not_active = [&](std::string_view run_id) {
    const json payload =
        check_error(peer.expect_event("error"), "No active run to cancel", "run_not_active");
    CHECK(payload["run_id"] == run_id);
  };
  peer.send_command(cancel("ghost"));
  expect_not_active("ghost");

  peer.run_to_completion("done");
  peer.send_command(cancel("done"));
  expect_not_active("done");

  peer.send_command(start("twice", 3, 60'000));
  peer.expect_event("run_started");
  // Both cancels in one burst: the first wins, the second finds nothing.
  peer.send_text(cancel("twice").dump());
  peer.send_text(cancel("twice").dump());
  std::vector<json> events = peer.events_until_terminal("twice");
  CHECK(events.back()["event_type"] == "run_cancelled");
  std::optional<json> next = peer.next_event();
  REQUIRE(next);
  if ((*next)["event_type"] == "run_event") next = peer.next_event();  // step 0 raced the cancel
  REQUIRE(next);
  CHECK((*next)["event_type"] == "error");
  CHECK((*next)["payload"]["code"] == "run_not_active");
  // One cancel counted, and "twice" is free again for a new run.
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_cancelled_client == 1; }));
  peer.run_to_completion("twice");
  other.finish();
}

TEST_CASE("lifecycle: runs past the per-connection limit answer too_many_runs", "[bad_input]") {
  server_fixture server;  // the default limit: 256
  bystander other(server.port(), 10, 20);
  raw_peer peer(server.port());
  peer.open_websocket();
  std::string burst;
  for (int i = 0; i <= 256; ++i) {
    json command = start("r" + std::to_string(i), 2, 60'000);
    if (i == 256) command["request_id"] = "one-too-many";
    burst += frame_text(command.dump());
  }
  peer.send(burst);
  int started = 0;
  std::optional<json> error;
  while (started < 256 || !error) {
    std::optional<json> event = peer.next_event();
    REQUIRE(event);
    const std::string type = (*event)["event_type"];
    if (type == "run_started") ++started;
    if (type == "error") {
      REQUIRE_FALSE(error);
      error = event;
    }
  }
  const json payload =
      check_error(*error, "Too many active runs on this connection (limit 256)", "too_many_runs");
  CHECK(payload["run_id"] == "r256");
  CHECK(payload["request_id"] == "one-too-many");
  // The connection stays, and a slot freed by a cancel can be used at once.
  peer.send_command(cancel("r0"));
  peer.send_command(start("r256", 1, 1));
  std::vector<json> events = peer.events_until_terminal("r256");
  CHECK(events.front()["event_type"] == "run_started");
  CHECK(events.back()["event_type"] == "run_done");
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active >= 255; }));
  other.finish();
  peer.send_frame(ws_op::close, close_payload(1000));
  CHECK(peer.wait_for_close() == 1000);
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 0; }));
}

TEST_CASE("lifecycle: 10k start and cancel pairs on one connection are all answered",
          "[bad_input]") {
  server_fixture server;
  bystander other(server.port(), 10, 20);
  raw_peer peer(server.port());
  peer.open_websocket();
  constexpr int pairs = 10'000;
  std::string burst;
  for (int i = 0; i < pairs; ++i) {
    const std::string run_id = "c" + std::to_string(i);
    burst += frame_text(start(run_id, 3, 60'000).dump());
    burst += frame_text(cancel(run_id).dump());
  }
  peer.send(burst);  // reads what comes back while it writes
  // Each run: run_started, maybe its step 0, then run_cancelled, nothing else.
  std::map<std::string, std::vector<std::string>> story;
  int cancelled = 0;
  int errors = 0;
  while (cancelled < pairs) {
    std::optional<json> event = peer.next_event(10000ms);
    REQUIRE(event);
    const std::string type = (*event)["event_type"];
    if (type == "error") {
      ++errors;
      continue;
    }
    story[(*event)["payload"]["run_id"]].push_back(type);
    if (type == "run_cancelled") ++cancelled;
  }
  CHECK(errors == 0);
  CHECK(story.size() == pairs);
  int with_step = 0;
  for (const auto& [run_id, types] : story) {
    INFO(run_id);
    REQUIRE(types.size() >= 2);
    CHECK(types.front() == "run_started");
    CHECK(types.back() == "run_cancelled");
    if (types.size() == 3) {
      CHECK(types[1] == "run_event");
      ++with_step;
    }
    CHECK(types.size() <= 3);
  }
  CHECK(server.wait_for_stats(
      [](const server_stats& s) { return s.runs_cancelled_client == pairs; }));
  peer.run_to_completion("after-churn");
  other.finish();
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 0; }));
}

// ------------------------------------------- found by this catalogue ----
// Each of these failed once; the fix is in the library, the test stays.

TEST_CASE("frames: a frame sent right behind the upgrade request does not corrupt the next one",
          "[bad_input]") {
  // RFC 6455 asks a client to wait for the 101. One that does not may lose
  // that frame, but its raw bytes must not end up inside the next message.
  server_fixture server;
  raw_peer peer(server.port());
  peer.send(upgrade_request() + frame_text(cancel("early").dump()));
  std::optional<http_answer> answer = peer.read_http_answer();
  REQUIRE(answer);
  REQUIRE(answer->status == 101);
  peer.expect_event("connected");
  peer.send_command(cancel("next"));
  json event = peer.expect_event("error");
  if (event["payload"]["run_id"] == "early") event = peer.expect_event("error");
  check_error(event, "No active run to cancel", "run_not_active");
  CHECK(event["payload"]["run_id"] == "next");
}

TEST_CASE("HTTP: a body over the limit answers 413", "[bad_input]") {
  server_fixture server;
  http_answer answer = answer_to(
      server.port(), "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20000\r\n\r\n" +
                         std::string(20'000, 'b'));
  CHECK(answer.status == 413);  // 431 is for header fields
}

namespace {

// Says what no well-behaved agent should: bytes that are not UTF-8.
class invalid_utf8_agent final : public agent {
 public:
  boost::asio::awaitable<void> run(run_context& context) override {
    if (context.run_id() == "throw") throw std::runtime_error("model said \xff\xfe");
    co_await context.emit("agent said \xc3\x28");
  }
};

}  // namespace

TEST_CASE("events stay valid UTF-8 when an agent emits invalid bytes", "[bad_input]") {
  // A text frame must be UTF-8: one bad byte from an agent makes a strict
  // client (Beast, browsers) fail the whole connection with 1007.
  server_config config = test_config();
  config.agent_logic = std::make_shared<invalid_utf8_agent>();
  server_fixture server(config);
  test_peer peer(server.port());
  peer.expect_event("connected");
  peer.send_command({{"command", "start_run"}, {"run_id", "emit"}});
  std::vector<json> events = peer.events_until_terminal("emit", 2000ms);
  CHECK(events.back()["event_type"] == "run_done");
  peer.send_command({{"command", "start_run"}, {"run_id", "throw"}});
  events = peer.events_until_terminal("throw", 2000ms);
  CHECK(events.back()["payload"]["ok"] == false);
}

// ------------------------------------------------------- resources ----

TEST_CASE("resources: a consumer that stalls past send_timeout gets what was sent then 1008",
          "[bad_input]") {
  server_config config = test_config();
  config.send_timeout = 300ms;
  config.handshake_timeout = 20s;  // the close deadline: the peer reads again long before it
  server_fixture server(config);
  raw_peer stalled(server.port());
  stalled.open_websocket();
  // Streams until every buffer on the way is full, then waits for a reader
  // that does not come: this peer reads nothing until told to below.
  stalled.send_command(start("flood", 10'000'000, 0));
  bystander other(server.port(), 20, 5);
  REQUIRE(server.wait_for_stats([](const server_stats& s) { return s.slow_consumer_closes == 1; },
                                10s));
  other.finish();  // its latency did not suffer: every step, in order, in time

  // Reading again: every event that was sent, in order, then the close.
  std::uint64_t next_step = 0;
  bool started = false;
  while (std::optional<json> event = stalled.next_event(5000ms)) {
    const std::string type = (*event)["event_type"];
    if (type == "run_started") {
      CHECK(!started);
      started = true;
      continue;
    }
    INFO("event: " << event->dump());
    REQUIRE(type == "run_event");
    REQUIRE((*event)["payload"]["step"] == next_step);
    ++next_step;
  }
  CHECK(started);
  CHECK(next_step > 0);
  CHECK(stalled.close_code() == 1008u);
  CHECK(server.wait_for_stats([](const server_stats& s) { return s.runs_active == 0; }));
  check_fresh_connection_serves(server.port());
}

TEST_CASE("resources: a consumer that pauses for less than send_timeout loses nothing",
          "[bad_input]") {
  server_config config = test_config();
  config.send_timeout = 30s;
  config.outbox_bytes = 16 * 1024;
  server_fixture server(config);
  raw_peer peer(server.port());
  peer.open_websocket();
  constexpr int steps = 50'000;
  peer.send_command(start("burst", steps, 0));
  // The pause under test: the server fills every buffer on the way meanwhile
  // and its run waits for room (nothing here depends on how far it got).
  std::this_thread::sleep_for(500ms);
  std::vector<json> events = peer.events_until_terminal("burst", 60s);
  REQUIRE(!events.empty());
  CHECK(events.front()["event_type"] == "run_started");
  CHECK(steps_of(events) == iota_steps(steps));
  CHECK(events.back()["event_type"] == "run_done");
  CHECK(server.get().stats().slow_consumer_closes == 0);
}

// ws-server's command line, read without starting anything: ranges, the
// options that bound others, and the messages a user sees.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "apps/server_options.hpp"

using agentws::parse_server_command_line;
using agentws::server_command_line;

namespace {

server_command_line parse(std::initializer_list<const char*> args, unsigned cores = 4) {
  std::vector<const char*> argv{"ws-server"};
  argv.insert(argv.end(), args.begin(), args.end());
  return parse_server_command_line(static_cast<int>(argv.size()), argv.data(), cores);
}

agentws::server_options accepted(const server_command_line& line) {
  INFO(line.errors);
  REQUIRE(line.options);
  return *line.options;
}

std::string refused(const server_command_line& line) {
  REQUIRE_FALSE(line.options);
  CHECK(line.exit_status == 2);
  CHECK(line.output.empty());
  return line.errors;
}

// A file in a fresh temporary directory, removed with it.
struct temp_dir {
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "agentws-opt-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string file(const std::string& name, const std::string& content) const {
    const std::string at = (path / name).string();
    std::ofstream(at, std::ios::binary) << content;
    return at;
  }
  std::filesystem::path path;
};

}  // namespace

TEST_CASE("ws-server options: the defaults", "[protocol][server_options]") {
  const auto o = accepted(parse({}));
  const agentws::server_config defaults;
  CHECK(o.config.host == "127.0.0.1");
  CHECK(o.config.port == 8000);
  CHECK(o.threads == 4);
  CHECK(o.config.default_params.steps == 5);
  CHECK(o.config.default_params.interval_ms == 1000);
  CHECK(o.config.limits.max_steps == defaults.limits.max_steps);
  CHECK(o.config.limits.max_message_bytes == defaults.limits.max_message_bytes);
  CHECK(o.config.outbox_bytes == defaults.outbox_bytes);
  CHECK(o.config.idle_timeout == defaults.idle_timeout);
  CHECK(o.config.shutdown_grace.count() == 1000);
  CHECK(o.log_level == spdlog::level::info);
  CHECK_FALSE(o.json_logs);
}

TEST_CASE("ws-server options: the thread default stays inside its range",
          "[protocol][server_options]") {
  CHECK(accepted(parse({}, 0)).threads == 1);
  CHECK(accepted(parse({}, 4096)).threads == 1024);
}

TEST_CASE("ws-server options: every value is stored", "[protocol][server_options]") {
  const auto o = accepted(parse({"--host",
                                 "::1",
                                 "--port",
                                 "0",
                                 "--threads",
                                 "3",
                                 "--steps",
                                 "7",
                                 "--interval-ms",
                                 "0",
                                 "--max-connections",
                                 "9",
                                 "--max-runs",
                                 "2",
                                 "--max-message-bytes",
                                 "4096",
                                 "--max-run-id-bytes",
                                 "4096",
                                 "--max-steps",
                                 "7",
                                 "--max-interval-ms",
                                 "0",
                                 "--outbox-bytes",
                                 "4096",
                                 "--handshake-timeout-ms",
                                 "100",
                                 "--idle-timeout-ms",
                                 "1000",
                                 "--send-timeout-ms",
                                 "86400000",
                                 "--shutdown-grace-ms",
                                 "250",
                                 "--allow-origin",
                                 "*",
                                 "--allow-origin",
                                 "https://a.example",
                                 "--log-level",
                                 "debug",
                                 "--log-format",
                                 "json"}));
  CHECK(o.config.host == "::1");
  CHECK(o.config.port == 0);
  CHECK(o.threads == 3);
  CHECK(o.config.default_params.steps == 7);
  CHECK(o.config.default_params.interval_ms == 0);
  CHECK(o.config.max_connections == 9);
  CHECK(o.config.limits.max_active_runs == 2);
  CHECK(o.config.limits.max_message_bytes == 4096);
  CHECK(o.config.limits.max_run_id_bytes == 4096);
  CHECK(o.config.limits.max_steps == 7);
  CHECK(o.config.limits.max_interval_ms == 0);
  CHECK(o.config.outbox_bytes == 4096);
  CHECK(o.config.handshake_timeout.count() == 100);
  CHECK(o.config.idle_timeout.count() == 1000);
  CHECK(o.config.send_timeout.count() == 86'400'000);
  CHECK(o.config.shutdown_grace.count() == 250);
  CHECK(o.config.allowed_origins == std::vector<std::string>{"*", "https://a.example"});
  CHECK(o.log_level == spdlog::level::debug);
  CHECK(o.json_logs);
}

TEST_CASE("ws-server options: the history, retention and run limits of durable runs",
          "[protocol][server_options]") {
  const auto o =
      accepted(parse({"--history-events", "5", "--history-bytes", "2048", "--retention-ms", "0",
                      "--max-runs-per-owner", "3", "--max-detached-runs", "0"}));
  CHECK(o.config.limits.history_events == 5);
  CHECK(o.config.limits.history_bytes == 2048);
  CHECK(o.config.limits.retention_ms == 0);
  CHECK(o.config.limits.max_runs_per_owner == 3);
  CHECK(o.config.limits.max_detached_runs == 0);
  const auto defaults = accepted(parse({}));
  CHECK(defaults.config.limits.history_events == 1024);
  CHECK(defaults.config.limits.history_bytes == 64 * 1024);
  CHECK(defaults.config.limits.retention_ms == 600'000);
  CHECK(refused(parse({"--history-events", "0", "--history-bytes", "100"})) ==
        "ws-server: --history-events: '0' is not an integer from 1 to 1000000\n"
        "ws-server: --history-bytes: '100' is not an integer from 1024 to 268435456\n"
        "Try 'ws-server --help'.\n");
}

TEST_CASE("ws-server options: --shutdown-grace-ms from 100 ms to 10 minutes",
          "[protocol][server_options]") {
  CHECK(accepted(parse({"--shutdown-grace-ms", "100"})).config.shutdown_grace.count() == 100);
  CHECK(accepted(parse({"--shutdown-grace-ms", "600000"})).config.shutdown_grace.count() ==
        600'000);
  for (const char* bad : {"0", "99", "600001", "-1", "1s", "", "1e3"}) {
    INFO(bad);
    CHECK(refused(parse({"--shutdown-grace-ms", bad})) ==
          std::string("ws-server: --shutdown-grace-ms: '") + bad +
              "' is not an integer from 100 to 600000\nTry 'ws-server --help'.\n");
  }
}

TEST_CASE("ws-server options: negative numbers no longer wrap", "[protocol][server_options]") {
  CHECK(refused(parse({"--threads", "-3"})) ==
        "ws-server: --threads: '-3' is not an integer from 1 to 1024\n"
        "Try 'ws-server --help'.\n");
  CHECK(refused(parse({"--port", "-1"}))
            .starts_with("ws-server: --port: '-1' is not an integer from 0 to 65535\n"));
  CHECK(refused(parse({"-p", "-1"})).starts_with("ws-server: --port: '-1' is not"));
  CHECK(refused(parse({"--steps=-1"}))
            .starts_with("ws-server: --steps: '-1' is not an integer from 0 to 10000000 (at most "
                         "--max-steps)\n"));
}

TEST_CASE("ws-server options: every problem is reported, one line each",
          "[protocol][server_options]") {
  CHECK(refused(parse({"--outbox-bytes", "0", "--idle-timeout-ms", "0", "--max-runs", "0"})) ==
        "ws-server: --max-runs: '0' is not an integer from 1 to 65536\n"
        "ws-server: --outbox-bytes: '0' is not an integer from 4096 to 67108864\n"
        "ws-server: --idle-timeout-ms: '0' is not an integer from 1000 to 86400000\n"
        "Try 'ws-server --help'.\n");
}

TEST_CASE("ws-server options: an empty value meets the option's own check",
          "[protocol][server_options]") {
  CHECK(refused(parse({"--port="}))
            .starts_with("ws-server: --port: '' is not an integer from 0 to 65535\n"));
  CHECK(refused(parse({"--port", ""}))
            .starts_with("ws-server: --port: '' is not an integer from 0 to 65535\n"));
}

TEST_CASE("ws-server options: --steps and --interval-ms stay within their maximums, in any order",
          "[protocol][server_options]") {
  const std::string steps_message =
      "ws-server: --steps: '7' is not an integer from 0 to 3 (at most --max-steps)\n";
  CHECK(refused(parse({"--steps", "7", "--max-steps", "3"})).starts_with(steps_message));
  CHECK(refused(parse({"--max-steps", "3", "--steps", "7"})).starts_with(steps_message));
  CHECK(refused(parse({"--max-interval-ms", "10", "--interval-ms", "11"}))
            .starts_with("ws-server: --interval-ms: '11' is not an integer from 0 to 10 "
                         "(at most --max-interval-ms)\n"));
  CHECK(refused(parse({"--max-run-id-bytes", "5000", "--max-message-bytes", "4096"}))
            .starts_with("ws-server: --max-run-id-bytes: '5000' is not an integer from 1 to "
                         "4096 (at most --max-message-bytes)\n"));
  // At the maximum is fine.
  const auto at_max = accepted(parse({"--steps", "3", "--max-steps", "3"}));
  CHECK(at_max.config.default_params.steps == 3);
}

TEST_CASE("ws-server options: a default above a given maximum is lowered to it",
          "[protocol][server_options]") {
  const auto o = accepted(parse({"--max-steps", "3", "--max-interval-ms", "0"}));
  CHECK(o.config.default_params.steps == 3);
  CHECK(o.config.default_params.interval_ms == 0);
  CHECK(o.config.limits.max_steps == 3);
}

TEST_CASE("ws-server options: a bad maximum is reported once, its dependant checked alone",
          "[protocol][server_options]") {
  CHECK(refused(parse({"--max-steps", "0", "--steps", "-1"})) ==
        "ws-server: --max-steps: '0' is not an integer from 1 to 9007199254740991\n"
        "ws-server: --steps: '-1' is not an integer from 0 to 9007199254740991\n"
        "Try 'ws-server --help'.\n");
}

TEST_CASE("ws-server options: origins, log settings, TLS pairs and stray words",
          "[protocol][server_options]") {
  CHECK(refused(parse({"--allow-origin", "https://app.example.com/"}))
            .starts_with("ws-server: --allow-origin: 'https://app.example.com/' is not an origin "
                         "(scheme://host[:port]): no trailing '/', browsers send none\n"));
  CHECK(refused(parse({"--allow-origin", "app.example.com"})).find("the scheme is missing") !=
        std::string::npos);
  CHECK(refused(parse({"--log-level", "loud"})) ==
        "ws-server: --log-level: 'loud' is not trace, debug, info, warn, error, critical or "
        "off\nTry 'ws-server --help'.\n");
  CHECK(refused(parse({"--log-format", "xml"}))
            .starts_with("ws-server: --log-format: 'xml' is not text or json\n"));
  CHECK(refused(parse({"--tls-cert", "a.pem"}))
            .starts_with("ws-server: --tls-cert and --tls-key go together\n"));
  CHECK(refused(parse({"--token-file", ""}))
            .starts_with("ws-server: --token-file: the path is empty\n"));
  CHECK(refused(parse({"--host", ""}))
            .starts_with("ws-server: --host: '' is not an address or a name\n"));
  CHECK(refused(parse({"8000"})).find("positional") != std::string::npos);
  CHECK(refused(parse({"--no-such-option"})).find("--no-such-option") != std::string::npos);
}

TEST_CASE("ws-server options: --help shows every range, --version the version",
          "[protocol][server_options]") {
  const auto help = parse({"--help"});
  CHECK_FALSE(help.options);
  CHECK(help.exit_status == 0);
  CHECK(help.errors.empty());
  // The text as one line: --help wraps descriptions at blanks.
  std::string text_of_help;
  for (char c : help.output) {
    const bool blank = c == ' ' || c == '\n';
    if (!blank || (!text_of_help.empty() && text_of_help.back() != ' ')) {
      text_of_help.push_back(blank ? ' ' : c);
    }
  }
  for (const char* text :
       {"--threads arg (=4)", "1..1024", "0..65535", "0..--max-steps", "0..--max-interval-ms",
        "1..1048576", "1..65536", "4096..67108864", "1..9007199254740991", "0..86400000",
        "100..600000", "1000..86400000", "(it cannot be switched off)", "Log times are UTC",
        "--max-run-id-bytes", "--shutdown-grace-ms arg (=1000)", "within --shutdown-grace-ms"}) {
    INFO(text);
    CHECK(text_of_help.find(text) != std::string::npos);
  }
  const auto version = parse({"--version"});
  CHECK(version.output.starts_with("ws-server 0.1.0 (protocol 2)"));
}

// The one token of a file in the single-token form ("" otherwise).
std::string single_token(const std::string& path) {
  const auto result = agentws::read_token_file(path);
  INFO(result.error);
  const bool single = result.error.empty() && !result.named_form && result.tokens.size() == 1 &&
                      result.tokens.front().name == "default";
  CHECK(single);
  return single ? result.tokens.front().token : std::string();
}

TEST_CASE("token file: the token, without surrounding blanks", "[protocol][server_options]") {
  temp_dir dir;
  CHECK(single_token(dir.file("t", "s3cret\nsecond line\n")) == "s3cret");
  CHECK(single_token(dir.file("crlf", "  s3cret \r\n")) == "s3cret");
  CHECK(single_token(dir.file("no-newline", "s3cret")) == "s3cret");
  // Only the first line counts: what follows it is never looked at.
  CHECK(single_token(dir.file("rest", "s3cret\nalice:x\n# note\n" + std::string(2 << 20, 'x'))) ==
        "s3cret");
  CHECK(single_token(dir.file("no-name", "a/b:c\n")) == "a/b:c");
}

namespace {

std::vector<agentws::named_token> named_tokens(std::string_view text) {
  const auto result = agentws::parse_token_file(text, "f");
  INFO(result.error);
  CHECK(result.error.empty());
  CHECK(result.named_form);
  return result.tokens;
}

std::string token_file_error(std::string_view text) {
  const auto result = agentws::parse_token_file(text, "f");
  CHECK(result.tokens.empty());
  return result.error;
}

bool same(const std::vector<agentws::named_token>& tokens,
          const std::vector<agentws::named_token>& expected) {
  return std::equal(tokens.begin(), tokens.end(), expected.begin(), expected.end(),
                    [](const agentws::named_token& a, const agentws::named_token& b) {
                      return a.name == b.name && a.token == b.token;
                    });
}

}  // namespace

TEST_CASE("token file: lines name:token, one owner each", "[protocol][server_options]") {
  CHECK(same(named_tokens("alice:tok-a\nbob:tok-b\n"), {{"alice", "tok-a"}, {"bob", "tok-b"}}));
  CHECK(same(named_tokens("alice:tok-a"), {{"alice", "tok-a"}}));
  // Comments, blank lines, CRLF and blanks around the name and the token.
  CHECK(same(named_tokens("\n# owners of runs\r\n\n  alice : tok-a \r\n\t# bob left\n"
                          "B.o_b-2:tok b\r\n\n"),
             {{"alice", "tok-a"}, {"B.o_b-2", "tok b"}}));
  // The token is all after the first ':'; "default:" keeps a token with a ':'.
  CHECK(same(named_tokens("default:a:b\n"), {{"default", "a:b"}}));
  CHECK(same(named_tokens("# a comment first\nsvc:x\n"), {{"svc", "x"}}));
  CHECK(same(named_tokens(std::string(64, 'n') + ":t"), {{std::string(64, 'n'), "t"}}));
  CHECK(same(named_tokens("a:" + std::string(4094, 't')), {{"a", std::string(4094, 't')}}));

  const auto file = agentws::read_token_file(temp_dir().file("named", "alice:tok-a\nbob:tok-b\n"));
  CHECK(file.named_form);
  CHECK(same(file.tokens, {{"alice", "tok-a"}, {"bob", "tok-b"}}));
  CHECK(agentws::token_owners_note(file.tokens) == "tokens for 2 owners: alice, bob");
  CHECK(agentws::token_owners_note({{"solo", "x"}}) == "tokens for 1 owner: solo");
}

TEST_CASE("token file: each refusal of the named form names the line, never a token",
          "[protocol][server_options]") {
  const std::string not_named =
      " is not name:token (a name of 1 to 64 letters, digits, '.', '_' or '-', a ':', then the "
      "token)";
  CHECK(token_file_error("alice:tok-a\nsecret-without-name\n") ==
        "--token-file f: line 2" + not_named);
  CHECK(token_file_error("alice:tok-a\n\n# c\nba/d:secret\n") ==
        "--token-file f: line 4" + not_named);
  CHECK(token_file_error("alice:tok-a\n:secret\n") == "--token-file f: line 2" + not_named);
  CHECK(token_file_error("alice:tok-a\n" + std::string(65, 'n') + ":secret\n") ==
        "--token-file f: line 2" + not_named);
  CHECK(token_file_error("alice:tok-a\nbob:\n") ==
        "--token-file f: line 2: the token of 'bob' is empty");
  CHECK(token_file_error("alice:tok-a\nbob: \r\n") ==
        "--token-file f: line 2: the token of 'bob' is empty");
  CHECK(token_file_error(std::string("alice:tok-a\nbob:sec\0ret\n", 24)) ==
        "--token-file f: line 2: the token of 'bob' holds control characters (is it a text file?)");
  CHECK(token_file_error("alice:tok-a\nbob:tok-b\nalice:secret\n") ==
        "--token-file f: line 3: the name 'alice' is already on line 1");
  CHECK(token_file_error("alice:tok-a\n# c\nbob:tok-a\n") ==
        "--token-file f: line 3: the token of 'bob' is also the token of 'alice' (line 1): each "
        "owner needs a token of its own");
  CHECK(token_file_error("alice:tok-a\nbob:" + std::string(4096, 's') + "\n") ==
        "--token-file f: line 2 is longer than 4096 bytes");
  CHECK(token_file_error("# only comments\n\n#alice:tok-a\n") ==
        "--token-file f: no name:token line: every line is blank or a comment");
  CHECK(token_file_error("alice:tok-a\n" + std::string(1 << 20, '\n')) ==
        "--token-file f: the file is longer than 1 MiB");
  // No message shows a token, even a wrong line that may be one.
  for (const std::string& text :
       {std::string("alice:tok-a\nsecret-without-name\n"), std::string("a:secret\nb:secret\n"),
        std::string("a:x\nb:" + std::string(5000, 's'))}) {
    const std::string error = token_file_error(text);
    CHECK(error.find("secret") == std::string::npos);
    CHECK(error.find("sss") == std::string::npos);
  }
}

TEST_CASE("token file: each failure names the path and the reason", "[protocol][server_options]") {
  temp_dir dir;
  auto error = [](const std::string& path) {
    auto result = agentws::read_token_file(path);
    CHECK(result.tokens.empty());
    return result.error;
  };
  const std::string missing = (dir.path / "missing").string();
  CHECK(error(missing) == "--token-file " + missing + ": no such file");
  CHECK(error(dir.path.string()) ==
        "--token-file " + dir.path.string() + ": is a directory, not a file");
  const std::string empty = dir.file("empty", "");
  CHECK(error(empty) ==
        "--token-file " + empty + ": the file is empty: its first line must hold the token");
  const std::string blank = dir.file("blank", " \r\ntoken on line two\n");
  CHECK(error(blank) ==
        "--token-file " + blank + ": the first line is empty: it must hold the token");
  const std::string binary = dir.file("binary", std::string("ab\0cd", 5));
  CHECK(error(binary) ==
        "--token-file " + binary + ": the token holds control characters (is it a text file?)");
  const std::string long_line = dir.file("long", std::string(5000, 'x'));
  CHECK(error(long_line) ==
        "--token-file " + long_line + ": the first line is longer than 4096 bytes");
  const std::string locked = dir.file("locked", "s3cret\n");
  ::chmod(locked.c_str(), 0);
  if (::geteuid() != 0) {  // root reads it anyway
    CHECK(error(locked) == "--token-file " + locked + ": cannot be read: Permission denied");
  }
}

// Names that need DNS (nosuchhost.invalid) are tried by tests/e2e/server_options.sh.
TEST_CASE("listen host: addresses as they are, localhost resolved", "[protocol][server_options]") {
  CHECK(agentws::resolve_listen_host("127.0.0.1").address == "127.0.0.1");
  CHECK(agentws::resolve_listen_host("::1").address == "::1");
  CHECK(agentws::resolve_listen_host("0.0.0.0").note.empty());
  const auto localhost = agentws::resolve_listen_host("localhost");
  CHECK(localhost.error.empty());
  CHECK((localhost.address == "127.0.0.1" || localhost.address == "::1"));
  CHECK(localhost.note.starts_with("--host localhost is "));
}

TEST_CASE("server URLs put IPv6 addresses in brackets", "[protocol][server_options]") {
  CHECK(agentws::server_url("ws", "127.0.0.1", 8000, "/ws") == "ws://127.0.0.1:8000/ws");
  CHECK(agentws::server_url("http", "::1", 8000, "/") == "http://[::1]:8000/");
  CHECK(agentws::host_and_port("::1", 0) == "[::1]:0");
}

TEST_CASE("the shutdown summary counts what the server did", "[protocol][server_options]") {
  agentws::server_stats s;
  s.connections_total = 1;
  CHECK(agentws::shutdown_summary(s).starts_with("served 1 WebSocket connection ("));
  s.connections_total = 3;
  s.connections_refused = 1;
  s.runs_started = 4;
  s.runs_done = 1;
  s.runs_cancelled_client = 1;
  s.runs_cancelled_shutdown = 2;
  s.runs_cancelled_timeout = 1;
  s.frames_sent = 20;
  s.bytes_sent = 2000;
  s.errors_sent = 1;
  s.frames_sent = 1;
  CHECK(agentws::shutdown_summary(s).starts_with("served 3 WebSocket connections ("));
  CHECK(agentws::shutdown_summary(s).find("sent 1 frame, ") != std::string::npos);
  s.frames_sent = 20;
  CHECK(agentws::shutdown_summary(s) ==
        "served 3 WebSocket connections (1 refused at --max-connections, 0 closed as slow "
        "consumers); runs: 4 started, 1 done, 4 cancelled (1 by clients, 2 at shutdown, 0 on "
        "disconnect, 1 at their deadline); sent 20 frames, 2000 bytes; error events: 1");
}

TEST_CASE("ws-server options: --agent splits its program on blanks, never through a shell",
          "[protocol][server_options]") {
  const auto options =
      accepted(parse({"--agent", "py=python3  agent.py --model 'x y'", "--agent", "sh=/bin/sh",
                      "--kill-grace-ms", "500", "--max-processes", "3", "--default-agent", "py"}));
  REQUIRE(options.program_agents.size() == 2);
  const auto& py = options.program_agents[0];
  CHECK(py.name == "py");
  CHECK(py.spec.argv == std::vector<std::string>{"python3", "agent.py", "--model", "'x", "y'"});
  CHECK(py.spec.kill_grace == std::chrono::milliseconds(500));
  CHECK(py.spec.accepts_input);
  CHECK(py.spec.framing == agentws::program_framing::json);
  CHECK(py.spec.env.empty());
  CHECK(options.max_processes == 3);
  CHECK(options.config.default_agent == "py");

  CHECK_THAT(refused(parse({"--agent", "no-program="})),
             Catch::Contains("--agent no-program: no program given"));
  CHECK_THAT(refused(parse({"--agent", "python3 agent.py"})),
             Catch::Contains("is not NAME=PROGRAM [ARG...]"));
  CHECK_THAT(refused(parse({"--agent", "a b=prog"})), Catch::Contains("is not an agent name"));
  CHECK_THAT(refused(parse({"--agent", "demo=prog"})), Catch::Contains("the server's own"));
  CHECK_THAT(refused(parse({"--agent", "x=a", "--agent", "x=b"})),
             Catch::Contains("agent x is defined twice"));
  CHECK_THAT(refused(parse({"--default-agent", "nope"})),
             Catch::Contains("--default-agent: no agent is named 'nope'"));
  CHECK(accepted(parse({"--default-agent", "demo"})).config.default_agent == "demo");
  CHECK_THAT(refused(parse({"--max-processes", "0"})), Catch::Contains("--max-processes"));
  CHECK_THAT(refused(parse({"--kill-grace-ms", "600001"})), Catch::Contains("--kill-grace-ms"));
}

TEST_CASE(
    "ws-server options: --config holds options and [agent.NAME] sections; the command line "
    "wins",
    "[protocol][server_options]") {
  temp_dir dir;
  const std::string path = dir.file("agents.conf",
                                    "port = 9001\n"
                                    "max-runs = 7\n"
                                    "default-agent = helper\n"
                                    "[agent.helper]\n"
                                    "command = /usr/bin/python3 helper.py\n"
                                    "description = Helps\n"
                                    "cwd = /srv/agents\n"
                                    "env = LANG=C.UTF-8\n"
                                    "env = MODEL=small\n"
                                    "pass-env = AGENTWS_TEST_PASSED\n"
                                    "pass-env = AGENTWS_TEST_UNSET\n"
                                    "kill-grace-ms = 250\n"
                                    "max-line-bytes = 4096\n"
                                    "accepts-input = false\n"
                                    "[agent.lines]\n"
                                    "command = /bin/cat\n"
                                    "framing = text\n");
  ::setenv("AGENTWS_TEST_PASSED", "passed on", 1);
  ::unsetenv("AGENTWS_TEST_UNSET");
  const auto options = accepted(parse({"--config", path.c_str(), "--port", "9002"}));
  CHECK(options.config.port == 9002);  // the command line wins
  CHECK(options.config.limits.max_active_runs == 7);
  CHECK(options.config.default_agent == "helper");
  REQUIRE(options.program_agents.size() == 2);
  const auto& helper = options.program_agents[0].spec;
  CHECK(helper.argv == std::vector<std::string>{"/usr/bin/python3", "helper.py"});
  CHECK(helper.description == "Helps");
  CHECK(helper.cwd == "/srv/agents");
  CHECK(helper.env ==
        std::vector<std::string>{"LANG=C.UTF-8", "MODEL=small", "AGENTWS_TEST_PASSED=passed on"});
  CHECK(helper.kill_grace == std::chrono::milliseconds(250));
  CHECK(helper.max_line_bytes == 4096);
  CHECK_FALSE(helper.accepts_input);
  CHECK(options.program_agents[1].name == "lines");
  CHECK(options.program_agents[1].spec.framing == agentws::program_framing::text);

  auto refused_config = [&](const std::string& text) {
    const std::string bad = dir.file("bad.conf", text);
    return refused(parse({"--config", bad.c_str()}));
  };
  CHECK_THAT(refused_config("[agent.x]\ndescription = no command\n"),
             Catch::Contains("[agent.x] has no command"));
  CHECK_THAT(refused_config("[agent.x]\ncommand = /bin/cat\nshell = yes\n"),
             Catch::Contains("unknown setting 'shell'"));
  CHECK_THAT(refused_config("[agent.x]\ncommand = /bin/cat\nframing = binary\n"),
             Catch::Contains("'binary' is not json or text"));
  CHECK_THAT(refused_config("[agent.x]\ncommand = /bin/cat\nenv = =x\n"),
             Catch::Contains("is not NAME=value"));
  CHECK_THAT(refused_config("[agent.x]\ncommand = /bin/cat\nmax-line-bytes = 100000\n"),
             Catch::Contains("max-line-bytes"));
  CHECK_THAT(refused_config("no-such-option = 1\n"), Catch::Contains("unknown setting"));
  CHECK_THAT(refused_config("config = other.conf\n"), Catch::Contains("cannot name another"));
  CHECK_THAT(refused(parse({"--config", "/nonexistent/agents.conf"})),
             Catch::Contains("--config: cannot read"));
}

TEST_CASE("ws-server options: a bare program name is looked up in PATH",
          "[protocol][server_options]") {
  temp_dir dir;
  const std::string tool = dir.file("tool", "#!/bin/sh\n");
  ::chmod(tool.c_str(), 0755);
  dir.file("data", "");  // not executable: skipped
  const std::string search = "/nonexistent:" + dir.path.string();
  CHECK(agentws::resolve_program("tool", search) == tool);
  CHECK(agentws::resolve_program("data", search) == "data");
  CHECK(agentws::resolve_program("./tool", search) == "./tool");
  CHECK(agentws::resolve_program("missing", search) == "missing");
}

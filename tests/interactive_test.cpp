// The interactive client's command language, parsed without any I/O.
#include <catch2/catch.hpp>

#include "agentws/interactive.hpp"

using namespace agentws;

TEST_CASE("interactive lines parse into commands", "[protocol][interactive]") {
  auto start =
      std::get<interactive_start>(parse_interactive_line("start r1 steps=3 interval_ms=100"));
  CHECK(start.run_id == "r1");
  CHECK(start.params.steps == 3u);
  CHECK(start.params.interval_ms == 100u);

  auto plain = std::get<interactive_start>(parse_interactive_line("  start   r2\r"));
  CHECK(plain.run_id == "r2");
  CHECK_FALSE(plain.params.steps);
  CHECK_FALSE(plain.params.interval_ms);

  CHECK(std::get<interactive_cancel>(parse_interactive_line("cancel r1")).run_id == "r1");
  CHECK(std::holds_alternative<interactive_list>(parse_interactive_line("list")));
  CHECK(std::holds_alternative<interactive_help>(parse_interactive_line("help")));
  CHECK(std::holds_alternative<interactive_quit>(parse_interactive_line("quit")));
  CHECK(std::holds_alternative<interactive_quit>(parse_interactive_line("exit")));
  CHECK(std::holds_alternative<interactive_blank>(parse_interactive_line("")));
  CHECK(std::holds_alternative<interactive_blank>(parse_interactive_line("   ")));
  CHECK(std::holds_alternative<interactive_blank>(parse_interactive_line("# a comment")));
}

TEST_CASE("interactive mistakes are explained", "[protocol][interactive]") {
  auto mistake = [](std::string_view line) {
    return std::get<interactive_mistake>(parse_interactive_line(line)).message;
  };
  CHECK(mistake("start") ==
        "usage: start RUN_ID [steps=N] [interval_ms=M] [agent=NAME] [timeout_ms=N] [input=JSON]");
  CHECK(mistake("cancel") == "usage: cancel RUN_ID");
  CHECK(mistake("cancel a b") == "usage: cancel RUN_ID");
  CHECK(mistake("start r steps=x") == "expected steps=N or interval_ms=M, got 'steps=x'");
  CHECK(mistake("start r steps=-1") == "expected steps=N or interval_ms=M, got 'steps=-1'");
  CHECK(mistake("start r steps") == "expected steps=N or interval_ms=M, got 'steps'");
  CHECK(mistake("start r speed=3") == "unknown parameter 'speed'");
  CHECK(mistake("dance") == "unknown command 'dance' (try help)");
}

TEST_CASE("interactive send takes a run and a JSON value", "[protocol][interactive]") {
  auto send =
      std::get<interactive_send>(parse_interactive_line(R"(send r1 {"answer": "yes, go"})"));
  CHECK(send.run_id == "r1");
  CHECK(send.input_json == R"({"answer":"yes, go"})");
  // The rest of the line, blanks inside it and a CR after it.
  CHECK(std::get<interactive_send>(parse_interactive_line("  send  r2   [1,  2]  \r")).input_json ==
        "[1,2]");
  CHECK(std::get<interactive_send>(parse_interactive_line(R"(send r "a  b")")).input_json ==
        R"("a  b")");
  CHECK(std::get<interactive_send>(parse_interactive_line("send r 0")).input_json == "0");

  // It is what goes on the wire, in send_input.
  CHECK(make_send_input("r1", send.input_json) ==
        R"({"command":"send_input","input":{"answer":"yes, go"},"run_id":"r1"})");

  auto mistake = [](std::string_view line) {
    return std::get<interactive_mistake>(parse_interactive_line(line)).message;
  };
  CHECK(mistake("send") == "usage: send RUN_ID JSON");
  CHECK(mistake("send r1") == "usage: send RUN_ID JSON");
  CHECK(mistake("send r1 yes").starts_with("send: the input is not JSON: parse error at line 1"));
  CHECK(mistake(R"(send r1 {"a": )").starts_with("send: the input is not JSON"));
  CHECK(mistake("send r1 1 2").starts_with("send: the input is not JSON"));
  CHECK(mistake("send r1 null") == "send: the input is any JSON value but null");
  CHECK(mistake("send r1 " + std::string(64, '[') + std::string(64, ']')) ==
        "send: the input is nested deeper than 63 levels (the server's limit, the command "
        "around it included)");
  CHECK(mistake("send " + std::string(257, 'x') + " 1") ==
        "send: the run_id is 257 bytes, longer than 256");
  CHECK(std::string(interactive_help_text()).find("send RUN_ID JSON") != std::string::npos);
}

TEST_CASE("interactive start names an agent, a deadline and an input", "[protocol][interactive]") {
  auto start = std::get<interactive_start>(parse_interactive_line(
      R"(start r1 steps=2 agent=echo timeout_ms=5000 input={"text": "hello there"})"));
  CHECK(start.run_id == "r1");
  CHECK(start.params.steps == 2u);
  CHECK(start.agent.agent == "echo");
  CHECK(start.agent.timeout_ms == 5000u);
  CHECK(start.agent.input_json == R"({"text":"hello there"})");
  // input= takes the rest of the line, words that look like parameters too.
  auto rest = std::get<interactive_start>(
      parse_interactive_line(R"(start r input=["steps=3", "agent=x"] )"));
  CHECK(rest.agent.input_json == R"(["steps=3","agent=x"])");
  CHECK_FALSE(rest.params.steps);
  CHECK_FALSE(rest.agent.agent);

  // Nothing asked for, nothing set: the start is what version 1 sends.
  auto plain = std::get<interactive_start>(parse_interactive_line("start r"));
  CHECK(plain.agent.empty());

  auto mistake = [](std::string_view line) {
    return std::get<interactive_mistake>(parse_interactive_line(line)).message;
  };
  CHECK(mistake("start r agent=") == "start: agent=NAME: the name is empty");
  CHECK(mistake("start r agent").starts_with("start: agent=NAME: the name is empty"));
  CHECK(mistake("start r timeout_ms=0") == "start: timeout_ms is from 1 to 86400000, not 0");
  CHECK(mistake("start r timeout_ms=86400001") ==
        "start: timeout_ms is from 1 to 86400000, not 86400001");
  CHECK(mistake("start r input=").starts_with("start: the input is not JSON"));
  CHECK(mistake("start r input={oops}").starts_with("start: the input is not JSON"));
}

TEST_CASE("a start's agent fields are sent only when set", "[protocol][interactive]") {
  const std::string frame = make_start_run("r1");
  // Byte for byte what a version 1 server gets.
  CHECK(with_agent_request(frame, {}) == R"({"command":"start_run","run_id":"r1"})");
  agent_request agent;
  agent.agent = "echo";
  CHECK(with_agent_request(frame, agent) ==
        R"({"agent":"echo","command":"start_run","run_id":"r1"})");
  agent.input_json = R"({"text":"hi"})";
  agent.timeout_ms = 60000;
  CHECK(
      with_agent_request(frame, agent) ==
      R"({"agent":"echo","command":"start_run","input":{"text":"hi"},"run_id":"r1","timeout_ms":60000})");

  // A start's own fields win over the defaults (--agent, --input, --timeout-ms), one by one.
  agent_request typed;
  typed.input_json = "2";
  const agent_request merged = agent.merged_with(typed);
  CHECK(merged.agent == "echo");
  CHECK(merged.input_json == "2");
  CHECK(merged.timeout_ms == 60000u);
  CHECK(agent_request{}.merged_with({}).empty());
}

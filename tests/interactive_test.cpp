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
  CHECK(mistake("start") == "usage: start RUN_ID [steps=N] [interval_ms=M]");
  CHECK(mistake("cancel") == "usage: cancel RUN_ID");
  CHECK(mistake("cancel a b") == "usage: cancel RUN_ID");
  CHECK(mistake("start r steps=x") == "expected steps=N or interval_ms=M, got 'steps=x'");
  CHECK(mistake("start r steps=-1") == "expected steps=N or interval_ms=M, got 'steps=-1'");
  CHECK(mistake("start r steps") == "expected steps=N or interval_ms=M, got 'steps'");
  CHECK(mistake("start r speed=3") == "unknown parameter 'speed'");
  CHECK(mistake("dance") == "unknown command 'dance' (try help)");
}

// Catch2's main, with the library's logs quiet unless AGENTWS_TEST_LOG names a
// level (e.g. AGENTWS_TEST_LOG=debug) for a failing test's story.
#define CATCH_CONFIG_RUNNER
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <cstdlib>

int main(int argc, char* argv[]) {
  const char* level = std::getenv("AGENTWS_TEST_LOG");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::warn);
  return Catch::Session().run(argc, argv);
}

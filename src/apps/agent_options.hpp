// ws-server's program agents from its options: `--agent NAME=PROGRAM ARG...`
// and the `[agent.NAME]` sections of `--config FILE`. Pure: files are read
// and PATH is searched by the caller.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "agentws/program_agent.hpp"

namespace agentws {

struct program_agent_option {
  std::string name;
  program_spec spec;
};

// Names of agents and of token owners: 1 to 64 letters, digits, '.', '_'
// or '-'.
bool is_plain_name(std::string_view name);

// "NAME=PROGRAM ARG...": the command split on blanks (no shell, no quoting),
// the rest of the spec as `defaults`. The error names the problem.
std::variant<program_agent_option, std::string> parse_agent_argument(std::string_view value,
                                                                     const program_spec& defaults);

// The settings of a config file's agent sections, as (key, value) pairs in
// file order, keys "agent.NAME.SETTING": command, description, cwd, env
// (NAME=value, repeatable), pass-env (NAME, repeatable: `lookup` gives the
// server's value, or nothing), kill-grace-ms, max-line-bytes, accepts-input
// (true/false), framing (json/text). Every agent needs a command.
struct agent_sections_result {
  std::vector<program_agent_option> agents;
  std::vector<std::string> problems;
};
agent_sections_result parse_agent_sections(
    const std::vector<std::pair<std::string, std::string>>& entries, const program_spec& defaults,
    const std::function<std::optional<std::string>(const std::string&)>& lookup);

// A bare program name ("python3") as the first match in `search_path` (a
// PATH value) that is an executable file; anything with a '/' as it is.
// Nothing found: the name as given (the spawn then fails, and says why).
std::string resolve_program(const std::string& program, std::string_view search_path);

}  // namespace agentws

#include "apps/agent_options.hpp"

#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "agentws/cli_options.hpp"
#include "agentws/events.hpp"

namespace agentws {

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

std::vector<std::string> split_on_blanks(std::string_view text) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < text.size()) {
    while (at < text.size() && is_blank(text[at]))
      ++at;
    std::size_t end = at;
    while (end < text.size() && !is_blank(text[end]))
      ++end;
    if (end > at) words.emplace_back(text.substr(at, end - at));
    at = end;
  }
  return words;
}

bool is_env_name(std::string_view name) {
  return !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_';
         });
}

// The setting names a section may use.
constexpr std::string_view agent_settings[] = {
    "command",       "description",    "cwd",           "env",    "pass-env",
    "kill-grace-ms", "max-line-bytes", "accepts-input", "framing"};

}  // namespace

bool is_plain_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::variant<program_agent_option, std::string> parse_agent_argument(std::string_view value,
                                                                     const program_spec& defaults) {
  const std::size_t equals = value.find('=');
  if (equals == std::string_view::npos) {
    return "--agent: '" + printable(value) + "' is not NAME=PROGRAM [ARG...]";
  }
  const std::string_view name = value.substr(0, equals);
  if (!is_plain_name(name)) {
    return "--agent: '" + printable(name) +
           "' is not an agent name (1 to 64 letters, digits, '.', '_' or '-')";
  }
  program_agent_option agent{std::string(name), defaults};
  agent.spec.argv = split_on_blanks(value.substr(equals + 1));
  if (agent.spec.argv.empty()) return "--agent " + agent.name + ": no program given";
  return agent;
}

agent_sections_result parse_agent_sections(
    const std::vector<std::pair<std::string, std::string>>& entries, const program_spec& defaults,
    const std::function<std::optional<std::string>(const std::string&)>& lookup) {
  agent_sections_result result;
  std::vector<std::string> order;  // agents in the order they first appear
  std::map<std::string, program_agent_option> agents;
  std::map<std::string, bool> has_command;
  for (const auto& [key, value] : entries) {
    const std::string_view rest = std::string_view(key).substr(std::string_view("agent.").size());
    const std::size_t dot = rest.rfind('.');
    const std::string name(rest.substr(0, dot == std::string_view::npos ? 0 : dot));
    const std::string setting(dot == std::string_view::npos ? rest : rest.substr(dot + 1));
    const std::string where = "[agent." + printable(name) + "] " + printable(setting);
    if (!is_plain_name(name)) {
      result.problems.push_back("config: '" + printable(key) +
                                "': an agent section is [agent.NAME], NAME 1 to 64 letters, "
                                "digits, '_' or '-'");
      continue;
    }
    if (std::find(std::begin(agent_settings), std::end(agent_settings), setting) ==
        std::end(agent_settings)) {
      result.problems.push_back("config: [agent." + name + "]: unknown setting '" +
                                printable(setting) +
                                "' (command, description, cwd, env, pass-env, kill-grace-ms, "
                                "max-line-bytes, accepts-input, framing)");
      continue;
    }
    auto [it, fresh] = agents.try_emplace(name, program_agent_option{name, defaults});
    if (fresh) order.push_back(name);
    program_spec& spec = it->second.spec;
    if (setting == "command") {
      spec.argv = split_on_blanks(value);
      if (spec.argv.empty()) {
        result.problems.push_back("config: " + where + ": no program given");
      } else {
        has_command[name] = true;
      }
    } else if (setting == "description") {
      spec.description = value;
    } else if (setting == "cwd") {
      spec.cwd = value;
    } else if (setting == "env") {
      const std::size_t equals = value.find('=');
      if (equals == std::string::npos || !is_env_name(std::string_view(value).substr(0, equals))) {
        result.problems.push_back("config: " + where + ": '" + printable(value) +
                                  "' is not NAME=value");
      } else {
        spec.env.push_back(value);
      }
    } else if (setting == "pass-env") {
      if (!is_env_name(value)) {
        result.problems.push_back("config: " + where + ": '" + printable(value) +
                                  "' is not a variable name");
      } else if (const auto found = lookup(value)) {
        spec.env.push_back(value + "=" + *found);
      }
    } else if (setting == "kill-grace-ms") {
      auto parsed = parse_integer_option(where, value, {0, 600'000});
      if (const auto* number = std::get_if<std::uint64_t>(&parsed)) {
        spec.kill_grace = std::chrono::milliseconds(*number);
      } else {
        result.problems.push_back("config: " + std::get<std::string>(parsed));
      }
    } else if (setting == "max-line-bytes") {
      auto parsed = parse_integer_option(where, value, {256, protocol_limits{}.max_event_bytes});
      if (const auto* number = std::get_if<std::uint64_t>(&parsed)) {
        spec.max_line_bytes = *number;
      } else {
        result.problems.push_back("config: " + std::get<std::string>(parsed));
      }
    } else if (setting == "accepts-input") {
      if (value == "true" || value == "yes" || value == "1") {
        spec.accepts_input = true;
      } else if (value == "false" || value == "no" || value == "0") {
        spec.accepts_input = false;
      } else {
        result.problems.push_back("config: " + where + ": '" + printable(value) +
                                  "' is not true or false");
      }
    } else if (setting == "framing") {
      if (value == "json") {
        spec.framing = program_framing::json;
      } else if (value == "text") {
        spec.framing = program_framing::text;
      } else {
        result.problems.push_back("config: " + where + ": '" + printable(value) +
                                  "' is not json or text");
      }
    }
  }
  for (const std::string& name : order) {
    if (!has_command[name]) {
      result.problems.push_back("config: [agent." + name + "] has no command");
      continue;
    }
    result.agents.push_back(std::move(agents.at(name)));
  }
  return result;
}

std::string resolve_program(const std::string& program, std::string_view search_path) {
  if (program.empty() || program.find('/') != std::string::npos) return program;
  std::size_t at = 0;
  while (at <= search_path.size()) {
    std::size_t end = search_path.find(':', at);
    if (end == std::string_view::npos) end = search_path.size();
    const std::string_view dir = search_path.substr(at, end - at);
    if (!dir.empty()) {
      std::string candidate(dir);
      candidate.append("/").append(program);
      struct stat info {};
      if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
          ::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
    }
    at = end + 1;
  }
  return program;
}

}  // namespace agentws

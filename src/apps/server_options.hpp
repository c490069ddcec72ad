// ws-server's command line: the option table, the range of every number, and
// the checks between options, all made before anything starts. Parsing is
// pure (no files, no network, no environment); reading the token file and
// resolving --host are separate steps, each with its own message.
#pragma once

#include <spdlog/common.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/cli_options.hpp"
#include "agentws/server.hpp"
#include "apps/agent_options.hpp"

namespace agentws {

// What ws-server runs with once its command line is accepted.
struct server_options {
  server_config config;
  unsigned threads = 1;
  spdlog::level::level_enum log_level = spdlog::level::info;
  bool json_logs = false;
  std::string token_file;  // empty: none given
  bool allow_unauthenticated = false;
  // Program agents (--agent, --config's [agent.NAME] sections), programs
  // not yet looked up in PATH (resolve_program), and the bound on their
  // live processes.
  std::vector<program_agent_option> program_agents;
  std::size_t max_processes = 256;
  std::chrono::milliseconds kill_grace{2'000};
};

// The outcome of reading the command line: options to run with, or an exit
// status with the text for stdout (--help, --version) or for stderr (every
// problem found, one line each, ready to print).
struct server_command_line {
  std::optional<server_options> options;
  int exit_status = 0;
  std::string output;
  std::string errors;
};

// The ranges ws-server accepts, both ends included; the README and --help
// state the same numbers.
namespace server_ranges {
inline constexpr integer_range port{0, 65535};
inline constexpr integer_range threads{1, 1024};
inline constexpr integer_range max_connections{1, 1'048'576};
// 0: --max-connections + 1,024.
inline constexpr integer_range max_sockets{0, 2'097'152};
// 0: no cap.
inline constexpr integer_range max_connections_per_address{0, 1'048'576};
inline constexpr integer_range max_requests_per_connection{1, 1'000'000};
inline constexpr integer_range max_runs{1, 65'536};
// Durable runs: each run's history, how long an ended run stays attachable
// (up to a week), runs per owner, and runs nobody follows.
inline constexpr integer_range history_events{1, 1'000'000};
inline constexpr integer_range history_bytes{1024, 256 * 1024 * 1024};
inline constexpr integer_range retention_ms{0, 7 * 24 * 3'600'000ull};
inline constexpr integer_range max_runs_per_owner{1, 1'000'000};
inline constexpr integer_range max_detached_runs{0, 1'000'000};
inline constexpr integer_range max_message_bytes{4096, 64 * 1024 * 1024};
inline constexpr integer_range max_run_id_bytes{1, 65'536};
// 2^53 - 1: the largest step number every JSON peer (JavaScript's too) reads exactly.
inline constexpr integer_range max_steps{1, 9'007'199'254'740'991};
inline constexpr integer_range max_interval_ms{0, 86'400'000};
inline constexpr integer_range outbox_bytes{4096, 64 * 1024 * 1024};
inline constexpr integer_range write_chunk_bytes{1024, 16 * 1024 * 1024};
// 0: the kernel's default (no low-water mark).
inline constexpr integer_range notsent_lowat_bytes{0, 64 * 1024 * 1024};
// 0: a quarter of the memory available (agentws::default_memory_budget);
// at most 1 TiB.
inline constexpr integer_range memory_budget{0, 1ull << 40};
inline constexpr integer_range memory_budget_grace_ms{100, 600'000};
// 0: the kernel's autotuning.
inline constexpr integer_range socket_send_buffer{0, 64 * 1024 * 1024};
inline constexpr integer_range handshake_timeout_ms{100, 600'000};
inline constexpr integer_range idle_timeout_ms{1000, 86'400'000};
inline constexpr integer_range send_timeout_ms{1000, 86'400'000};
// At least the time a reading client needs for its run_cancelled and the close.
inline constexpr integer_range shutdown_grace_ms{100, 600'000};
// Program agents: live processes server-wide, and SIGTERM to SIGKILL.
inline constexpr integer_range max_processes{1, 65'536};
inline constexpr integer_range kill_grace_ms{0, 600'000};
}  // namespace server_ranges

// Reads ws-server's arguments (argv[0] is skipped). `hardware_threads` is the
// default for --threads (clamped into its range). Exit status 0 for --help
// and --version, 2 for any bad option or value.
server_command_line parse_server_command_line(int argc, const char* const* argv,
                                              unsigned hardware_threads);

// The bearer tokens of --token-file, in one of two forms:
//  - one token, the first line without surrounding blanks (later lines are
//    ignored); its owner is named "default";
//  - lines "name:token", one per owner: a name of 1 to 64 letters, digits,
//    '.', '_' or '-', then the token (everything after the first ':').
//    Blank lines and lines starting with '#' are skipped; names and tokens
//    are each used once.
// The first line that is not blank tells them apart: a '#' or a valid name
// before a ':' starts the named form (so a single token such as "a:b" is
// written "default:a:b"). `error` says which file and why not (missing, a
// directory, unreadable, empty; in the named form the line and its problem)
// when `tokens` is empty; it names owners but never shows a token.
struct token_file_result {
  std::vector<named_token> tokens;
  bool named_form = false;
  std::string error;
};
token_file_result read_token_file(const std::string& path);

// The same rules on the text of a file; `path` only names it in messages.
token_file_result parse_token_file(std::string_view text, const std::string& path);

// "tokens for 2 owners: alice, bob": who may connect, for the log (names only).
std::string token_owners_note(const std::vector<named_token>& tokens);

// `host` as an address to bind: an IP address as it is, a name resolved
// (its first IPv4 address, else its first address). `note` mentions the
// addresses left out; `error` says why the name does not resolve.
struct listen_host_result {
  std::string address;
  std::string note;
  std::string error;
};
listen_host_result resolve_listen_host(const std::string& host);

// "127.0.0.1:8000", "[::1]:8000": an address and port as URLs and logs write them.
std::string host_and_port(const std::string& address, std::uint16_t port);

// "ws://127.0.0.1:8000/ws", "http://[::1]:8000/" and the like: the URL a
// client uses for `address` (IPv6 in brackets).
std::string server_url(std::string_view scheme, const std::string& address, std::uint16_t port,
                       std::string_view path);

// One log line with what the server did over its life, for the stop.
std::string shutdown_summary(const server_stats& stats);

}  // namespace agentws

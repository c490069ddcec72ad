// The agentws server: HTTP (health) and the WebSocket protocol on one port.
#pragma once

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "agentws/agent.hpp"
#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace agentws {

// One bearer token and the name of its owner (the owner of the runs it starts).
struct named_token {
  std::string name;
  std::string token;
};

// An agent the server offers under `name` (start_run's "agent").
struct named_agent {
  std::string name;
  std::shared_ptr<agent> logic;
};

struct server_config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;  // 0 picks a free port; see server::port()

  protocol_limits limits;
  run_params default_params;           // for start_run without params
  std::shared_ptr<agent> agent_logic;  // null: the demo agent
  // More agents, by name ("demo" is always offered, and "default" when
  // agent_logic is set); the first of a name counts. `default_agent` names
  // the one a start_run without "agent" gets (empty: agent_logic's, else
  // the demo agent).
  std::vector<named_agent> agents;
  std::string default_agent;

  std::size_t max_connections = 10'000;  // WebSocket sessions; past it: 503
  // Every accepted socket, before and after the upgrade (the way nginx counts
  // worker_connections). 0: max_connections + 1,024, room for handshakes and
  // HTTP requests while the WebSockets are all taken. When full, the oldest
  // socket not yet upgraded is closed for the new one; when every socket is a
  // WebSocket, the new one is closed at once. ws-server keeps it below the
  // open-file limit.
  std::size_t max_sockets = 0;
  // Sockets from one client address; past it, new ones from that address are
  // closed at once. 0: no cap (behind a reverse proxy or a NAT many users
  // share one address).
  std::size_t max_connections_per_address = 0;
  // HTTP requests on one keep-alive connection before it is closed (the last
  // answer says "Connection: close").
  std::size_t max_requests_per_connection = 100;
  // Bytes of events queued per connection before runs wait (backpressure).
  std::size_t outbox_bytes = 256 * 1024;
  // Bytes the writer hands to the socket at a time (two such writes may be
  // outstanding). Frames handed over can no longer be overtaken by an answer
  // or dropped by a cancel, so this bounds how far behind an answer can be.
  std::size_t write_chunk_bytes = 32 * 1024;
  // TCP_NOTSENT_LOWAT on every connection: at most about this many bytes wait
  // unsent in the kernel (without capping the window), so what is queued later
  // can still overtake. 0 leaves the kernel's default (unbounded: the send
  // buffer autotunes up to net.ipv4.tcp_wmem's maximum).
  std::size_t tcp_notsent_lowat = 32 * 1024;
  // Output queued in the whole process (every connection's outbox and
  // framed bytes not yet taken by the kernel): past it, the connections that
  // hold more than their share wait (their runs and their command reading)
  // while the others go on; when it stays reached, clients that take nothing
  // are closed first (see memory_budget_grace). 0: default_memory_budget();
  // at least 1 MiB and four write chunks (see effective_memory_budget).
  std::size_t memory_budget = 0;
  // How long the budget may stay reached before the connections whose
  // clients took nothing for that long are closed (1008, cause memory_budget).
  std::chrono::milliseconds memory_budget_grace{5'000};
  // SO_SNDBUF on every connection: the kernel's share of a socket's output
  // (the bytes sent and not yet acknowledged, plus TCP_NOTSENT_LOWAT's
  // unsent ones) stays under about twice this (the kernel doubles it for its
  // bookkeeping). Caps throughput at about this many bytes per round trip
  // (512 KiB: 5 MB/s at 100 ms). 0 leaves the kernel's autotuning (up to
  // net.ipv4.tcp_wmem's maximum, 4 MiB per socket by default).
  std::size_t socket_send_buffer = 512 * 1024;
  // Commands whose answers are not yet sent, per connection: past it the
  // server stops reading commands until the client takes some (answers are
  // sent ahead of run events, so this drains at the client's pace).
  std::size_t max_pending_answers = 64;
  // Everything before the upgrade (TLS, every HTTP request of a keep-alive
  // connection, the WebSocket handshake) must finish this long after the
  // accept: one deadline, not one per request. Also the closing handshake's.
  std::chrono::milliseconds handshake_timeout{10'000};
  // A silent peer is pinged after half of this and dropped after all of it.
  std::chrono::milliseconds idle_timeout{60'000};
  // A peer that takes no bytes for this long while events wait is dropped.
  std::chrono::milliseconds send_timeout{30'000};
  // On stop(), connections still open after this are closed hard.
  std::chrono::milliseconds shutdown_grace{1'000};

  // Browser origins allowed besides the server's own ("*": any). Requests
  // without an Origin header (command-line clients) are always allowed.
  std::vector<std::string> allowed_origins;
  // When not empty, /ws and /metrics require "Authorization: Bearer <token>"
  // or "?token=<token>"; 401 otherwise. Compared in constant time.
  std::string token;
  std::vector<named_token> tokens;  // several owners; `token` alone counts as one named "default"

  // TLS (wss://): when both are set, every connection starts with a TLS
  // handshake. PEM files: the certificate chain (leaf first) and its key.
  // start() throws std::runtime_error when they cannot be loaded.
  std::string tls_cert_file;
  std::string tls_key_file;

  server_identity identity{"agentws", "0.1.0"};
};

// True for addresses that only this machine can reach (127.0.0.0/8, ::1).
bool is_loopback_address(const std::string& host);

// Counters, readable from any thread while the server runs.
struct server_stats {
  std::uint64_t connections_open = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t connections_refused = 0;
  std::uint64_t runs_active = 0;
  std::uint64_t runs_started = 0;
  std::uint64_t runs_done = 0;
  std::uint64_t runs_cancelled_client = 0;
  std::uint64_t runs_cancelled_shutdown = 0;
  std::uint64_t runs_cancelled_disconnect = 0;
  std::uint64_t runs_cancelled_timeout = 0;
  std::uint64_t frames_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t errors_sent = 0;
  std::uint64_t slow_consumer_closes = 0;
  std::uint64_t outbox_waits = 0;             // a run found its connection's outbox full
  std::uint64_t command_read_pauses = 0;      // a reader waited for answers to be sent
  std::uint64_t sockets_open = 0;             // accepted sockets, upgraded or not
  std::uint64_t sockets_accepted = 0;         // every socket admitted, ever
  std::uint64_t sockets_evicted = 0;          // pre-upgrade sockets closed to make room
  std::uint64_t sockets_refused_full = 0;     // closed at accept: every slot a WebSocket
  std::uint64_t sockets_refused_address = 0;  // closed at accept: per-address cap
  std::uint64_t accept_fd_exhausted = 0;      // accept failed for want of descriptors
  std::uint64_t memory_budget_bytes = 0;      // the budget in force
  std::uint64_t output_bytes_reserved = 0;    // what connections hold of it now
  std::uint64_t memory_budget_waits = 0;      // a connection waited for the budget
  std::uint64_t memory_budget_closes = 0;     // closed for taking nothing while it was reached
  std::uint64_t runs_retained = 0;            // ended runs still attachable (their histories)
  std::uint64_t runs_detached = 0;            // going runs no connection follows
};

// The socket limit in force: server_config::max_sockets, or its default.
std::size_t effective_max_sockets(const server_config& config);

// A quarter of the memory this process may use (the machine's, or its
// cgroup's memory.max when lower), and at least 64 MiB.
std::size_t default_memory_budget();
// The memory budget in force: server_config::memory_budget, or the default;
// raised to 1 MiB or four write chunks if below (one connection's writer).
std::size_t effective_memory_budget(const server_config& config);

class server {
 public:
  // The server runs on `io`; run io.run() on as many threads as wanted:
  // each connection is serialised on its own strand.
  server(boost::asio::io_context& io, server_config config);
  // The server runs on several contexts, each meant to be run by one thread
  // (what ws-server does): the acceptor lives on the first, and connections
  // are dealt to all of them in turn. A connection then stays on one thread,
  // and none of its handlers waits for a wake-up from another thread, which
  // halves cancel latency compared with one context run by two threads.
  // Every context must outlive the server; at least one is required.
  server(std::span<boost::asio::io_context* const> contexts, server_config config);
  // A started server not stopped yet is stopped (as by stop() with no
  // callback): it closes its connections in the background and each
  // context's run() returns once they are gone. Never waits; the contexts
  // must still outlive what was posted to them.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds and starts accepting. Throws boost::system::system_error when the
  // address cannot be bound. From here until stop() has finished, the server
  // keeps every context from running out of work (a context with no
  // connection yet must not return from run()).
  void start();

  // The bound port (useful with port 0). Valid after start().
  std::uint16_t port() const noexcept;

  // Graceful stop, callable from any thread, returns at once: stops
  // accepting, cancels every run (run_cancelled, reason "shutdown"), closes
  // every WebSocket with 1001, and force-closes what remains after
  // shutdown_grace. `on_stopped` (optional) runs once every connection has
  // ended; io.run() returns when nothing else of the caller's is pending.
  void stop(std::function<void()> on_stopped = {});

  server_stats stats() const;
  const server_config& config() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace agentws

#include "test_peer.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <catch2/catch.hpp>

#include <algorithm>

namespace agentws::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio::ip::tcp;
using boost::system::error_code;

server_config test_config() {
  server_config config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.default_params = {5, 20};
  config.handshake_timeout = 2000ms;
  config.shutdown_grace = 1000ms;
  return config;
}

namespace {

std::vector<std::unique_ptr<asio::io_context>> make_contexts(unsigned threads, io_layout layout) {
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  if (layout == io_layout::shared_context) {
    contexts.push_back(std::make_unique<asio::io_context>(static_cast<int>(threads)));
  } else {
    for (unsigned i = 0; i < threads; ++i)
      contexts.push_back(std::make_unique<asio::io_context>(1));
  }
  return contexts;
}

std::vector<asio::io_context*> pointers_to(
    const std::vector<std::unique_ptr<asio::io_context>>& contexts) {
  std::vector<asio::io_context*> pointers;
  for (const auto& context : contexts)
    pointers.push_back(context.get());
  return pointers;
}

}  // namespace

server_fixture::server_fixture(server_config config, unsigned threads, io_layout layout)
    : contexts_(make_contexts(threads, layout)),
      server_(pointers_to(contexts_), std::move(config)) {
  server_.start();
  for (unsigned i = 0; i < threads; ++i) {
    // run_for bounds the whole test: a server that never stops fails it.
    asio::io_context& context = *contexts_[i % contexts_.size()];
    threads_.emplace_back([&context] { context.run_for(60s); });
  }
}

server_fixture::~server_fixture() {
  if (!stopped_) CHECK(stop_and_join());
}

bool server_fixture::all_stopped() const {
  for (const auto& context : contexts_) {
    if (!context->stopped()) return false;
  }
  return true;
}

bool server_fixture::stop_and_join(std::chrono::milliseconds limit) {
  stopped_ = true;
  server_.stop();
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!all_stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  const bool in_time = all_stopped();
  if (!in_time) {
    for (auto& context : contexts_)
      context->stop();  // do not hang the suite; the caller fails the test
  }
  for (auto& thread : threads_)
    thread.join();
  threads_.clear();
  return in_time;
}

bool server_fixture::wait_for_stats(const std::function<bool(const server_stats&)>& condition,
                                    std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition(server_.stats())) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

test_peer::test_peer(std::uint16_t port, std::string target) : ws_(io_) {
  bool done = false;
  error_code result;
  beast::get_lowest_layer(ws_).async_connect(
      tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), [&](error_code ec) {
        if (ec) {
          result = ec;
          done = true;
          return;
        }
        ws_.async_handshake("127.0.0.1:" + std::to_string(port), target, [&](error_code hs) {
          result = hs;
          done = true;
        });
      });
  REQUIRE(run_until(done, 5000ms));
  REQUIRE_FALSE(result);
  ws_.text(true);
}

test_peer::~test_peer() {
  abort();
}

bool test_peer::run_until(bool& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  io_.restart();
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io_.run_one_until(deadline);
    if (io_.stopped()) io_.restart();
  }
  if (done) return true;
  // Give up: cancel what is pending so the stream is left in a known state.
  error_code ignored;
  beast::get_lowest_layer(ws_).socket().close(ignored);
  io_.restart();
  io_.run_for(1000ms);
  closed_ = true;
  return false;
}

void test_peer::send_text(std::string_view text) {
  bool done = false;
  error_code result;
  ws_.text(true);
  ws_.async_write(asio::buffer(text.data(), text.size()), [&](error_code ec, std::size_t) {
    result = ec;
    done = true;
  });
  REQUIRE(run_until(done, 5000ms));
  REQUIRE_FALSE(result);
}

void test_peer::send_binary(std::string_view bytes) {
  bool done = false;
  error_code result;
  ws_.binary(true);
  ws_.async_write(asio::buffer(bytes.data(), bytes.size()), [&](error_code ec, std::size_t) {
    result = ec;
    done = true;
  });
  REQUIRE(run_until(done, 5000ms));
  ws_.text(true);
  REQUIRE_FALSE(result);
}

std::optional<json> test_peer::next_event(std::chrono::milliseconds limit) {
  if (closed_) return std::nullopt;
  bool done = false;
  error_code result;
  buffer_.consume(buffer_.size());
  ws_.async_read(buffer_, [&](error_code ec, std::size_t) {
    result = ec;
    done = true;
  });
  if (!run_until(done, limit) || result) {
    closed_ = true;
    return std::nullopt;
  }
  json event = json::parse(beast::buffers_to_string(buffer_.cdata()), nullptr, false);
  REQUIRE(event.is_object());
  return event;
}

json scripted_peer::expect_event(std::string_view event_type, std::chrono::milliseconds limit) {
  std::optional<json> event = next_event(limit);
  INFO("waiting for " << event_type);
  REQUIRE(event.has_value());
  INFO("got " << event->dump());
  REQUIRE((*event)["event_type"] == event_type);
  return *event;
}

std::vector<json> scripted_peer::events_until_terminal(std::string_view run_id,
                                                       std::chrono::milliseconds limit) {
  std::vector<json> events;
  auto is_terminal = [](const json& event) {
    return event["event_type"] == "run_done" || event["event_type"] == "run_cancelled";
  };
  // Runs interleave: this run's events, even its end, may have been read
  // (and stashed) while the caller waited for another one.
  for (auto it = stash.begin(); it != stash.end();) {
    const json& payload = (*it)["payload"];
    if (!payload.contains("run_id") || payload["run_id"] != run_id) {
      ++it;
      continue;
    }
    events.push_back(std::move(*it));
    it = stash.erase(it);
    if (is_terminal(events.back())) return events;
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    INFO("waiting for the end of " << run_id);
    REQUIRE(left.count() > 0);
    std::optional<json> event = next_event(left);
    REQUIRE(event.has_value());
    const json& payload = (*event)["payload"];
    if (!payload.contains("run_id") || payload["run_id"] != run_id) {
      stash.push_back(*event);
      continue;
    }
    events.push_back(*event);
    if (is_terminal(events.back())) return events;
  }
}

void scripted_peer::run_to_completion(std::string_view run_id, int steps, int interval_ms) {
  send_command({{"command", "start_run"},
                {"run_id", run_id},
                {"params", {{"steps", steps}, {"interval_ms", interval_ms}}}});
  std::vector<json> events = events_until_terminal(run_id);
  REQUIRE(events.front()["event_type"] == "run_started");
  REQUIRE(events.back()["event_type"] == "run_done");
  REQUIRE(events.size() == static_cast<std::size_t>(steps) + 2);
  for (int i = 0; i < steps; ++i)
    REQUIRE(events[i + 1]["payload"]["step"] == i);
}

unsigned test_peer::wait_for_close(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!closed_ && std::chrono::steady_clock::now() < deadline) {
    if (auto event = next_event(std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now()))) {
      stash.push_back(*event);
    }
  }
  return static_cast<unsigned>(ws_.reason().code);
}

void test_peer::close() {
  bool done = false;
  ws_.async_close(websocket::close_code::normal, [&](error_code) { done = true; });
  run_until(done, 5000ms);
}

void test_peer::abort() {
  error_code ignored;
  beast::get_lowest_layer(ws_).socket().close(ignored);
  closed_ = true;
}

std::string http_exchange(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  tcp::socket socket(io);
  error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return {};
  asio::write(socket, asio::buffer(request), ec);
  if (ec) return {};
  // The server answers and closes (Connection: close in every request here).
  timeval timeout{5, 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string response;
  char chunk[4096];
  for (;;) {
    const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
    response.append(chunk, n);
    // A 101 answer keeps the connection: the headers are all we need.
    if (ec ||
        (response.starts_with("HTTP/1.1 101") && response.find("\r\n\r\n") != std::string::npos)) {
      break;
    }
  }
  return response;
}

json start(std::string_view run_id, int steps, int interval_ms) {
  return {{"command", "start_run"},
          {"run_id", run_id},
          {"params", {{"steps", steps}, {"interval_ms", interval_ms}}}};
}

json cancel(std::string_view run_id) {
  return {{"command", "cancel_run"}, {"run_id", run_id}};
}

std::vector<std::uint64_t> steps_of(const std::vector<json>& events) {
  std::vector<std::uint64_t> steps;
  for (const auto& e : events) {
    if (e["event_type"] == "run_event") steps.push_back(e["payload"]["step"]);
  }
  return steps;
}

std::vector<std::uint64_t> iota_steps(std::uint64_t n) {
  std::vector<std::uint64_t> steps(n);
  for (std::uint64_t i = 0; i < n; ++i)
    steps[i] = i;
  return steps;
}

unsigned http_status(std::uint16_t port, const std::string& request) {
  const std::string response = http_exchange(port, request);
  if (!response.starts_with("HTTP/1.1 ") || response.size() < 12) return 0;
  return static_cast<unsigned>(std::stoul(response.substr(9, 3)));
}

std::string http_body(std::uint16_t port, const std::string& path) {
  const std::string response = http_exchange(
      port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (!response.starts_with("HTTP/1.1 200")) return {};
  const std::size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : response.substr(body + 4);
}

}  // namespace agentws::testing

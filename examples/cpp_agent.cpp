// The README's agent ("Plugging in your own agent") as a program: a server
// that offers it as "assistant", its default agent.
//
// Usage: agentws_example_cpp_agent [PORT]   (default 8000; 0 picks a free one)
// It prints "listening on ws://127.0.0.1:PORT/ws" once it accepts, and stops
// gracefully on SIGINT or SIGTERM.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <agentws/agent.hpp>
#include <agentws/server.hpp>

namespace {

// Stands in for a model call: the answer, token by token.
boost::asio::awaitable<std::vector<std::string>> generate_tokens(const std::string& prompt) {
  std::vector<std::string> tokens;
  std::istringstream words("You asked: " + prompt);
  for (std::string word; words >> word;)
    tokens.push_back(word + " ");
  co_return tokens;
}

// Stands in for the action the user approves; says that it happened.
boost::asio::awaitable<void> apply_it(agentws::run_context& run) {
  const nlohmann::json done = {{"kind", "text"}, {"text", "Applied."}};
  co_await run.emit_fields(done);
}

class my_agent final : public agentws::agent {
 public:
  std::string description() const override { return "Answers a prompt, asks before acting"; }
  bool accepts_input() const override { return true; }       // clients may send_input
  bool takes_demo_params() const override { return false; }  // params are its own
  // A bad start is an error event, not a failed run.
  std::optional<agentws::protocol_error> validate(const nlohmann::json& /*params*/,
                                                  const nlohmann::json& input,
                                                  const agentws::protocol_limits&) const override {
    if (input.is_object() && input.contains("prompt") && input["prompt"].is_string())
      return std::nullopt;
    return agentws::protocol_error{
        agentws::protocol_error_code::invalid_input, "input must be {\"prompt\": ...}", {}, {}, {}};
  }
  boost::asio::awaitable<void> run(agentws::run_context& run) override {
    const std::string prompt = run.input()["prompt"];
    for (const auto& token : co_await generate_tokens(prompt)) {  // your model call
      const nlohmann::json delta = {{"kind", "text_delta"}, {"text", token}};
      const bool sent = co_await run.emit_fields(delta);  // false: cancelled
      if (!sent) co_return;
    }
    const nlohmann::json ask = {{"kind", "input_required"}, {"prompt", "Apply it?"}};
    const bool asked = co_await run.emit_fields(ask);
    if (!asked) co_return;
    const std::optional<nlohmann::json> answer = co_await run.next_input();  // nothing: cancelled
    if (answer && *answer == "yes") co_await apply_it(run);
  }
};

}  // namespace

int main(int argc, char** argv) {
  agentws::server_config config;
  config.port = argc > 1 ? static_cast<std::uint16_t>(std::atoi(argv[1])) : 8000;
  config.agents = {{"assistant", std::make_shared<my_agent>()}};
  config.default_agent = "assistant";  // else the demo agent
  boost::asio::io_context io;
  agentws::server server(io, config);
  server.start();

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&server](const boost::system::error_code& error, int) {
    if (!error) server.stop();
  });
  std::cout << "listening on ws://127.0.0.1:" << server.port() << "/ws" << std::endl;
  io.run();
}

// Where ws-client -i gets its lines: a terminal, with a prompt, line editing
// and history (libedit), or anything else (a pipe, a file) read line by line.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "agentws/interactive.hpp"

namespace agentws {

// Lines from stdin, read on their own thread with blocking reads (stdin may
// be a pipe or a file). The thread is detached: at exit it may still be
// blocked in a read, so leave with std::_Exit.
class stream_line_input final : public interactive_input {
 public:
  void start(std::function<void(std::optional<std::string>)> deliver) override;
};

// Lines typed at the terminal on stdin, edited with libedit (emacs keys,
// history with the arrows), read from the executor's thread as keys arrive.
// Output must go through print(), which clears the prompt and the line being
// typed, writes the text, and draws them again below it. Ctrl-D on an empty
// line ends the input; SIGINT, SIGTERM and SIGHUP deliver "quit!" (a second
// one leaves at once, terminal restored). All calls on the executor's thread.
class terminal_line_input final : public interactive_input {
 public:
  terminal_line_input(boost::asio::any_io_executor executor, std::string prompt);
  ~terminal_line_input() override;
  terminal_line_input(const terminal_line_input&) = delete;
  terminal_line_input& operator=(const terminal_line_input&) = delete;

  void start(std::function<void(std::optional<std::string>)> deliver) override;

  // Writes `text` (ending in a newline) to `stream` above the line being typed.
  void print(std::FILE* stream, std::string_view text);

  // Gives the terminal back as it was (also done by the destructor).
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace agentws

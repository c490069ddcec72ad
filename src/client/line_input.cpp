#include "agentws/line_input.hpp"

#include <editline/readline.h>
#include <unistd.h>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

namespace agentws {

namespace asio = boost::asio;

void stream_line_input::start(std::function<void(std::optional<std::string>)> deliver) {
  // Detached: a thread blocked in getline must not keep the process alive.
  std::thread([deliver = std::move(deliver)] {
    std::string line;
    while (std::getline(std::cin, line))
      deliver(line);
    deliver(std::nullopt);
  }).detach();
}

// libedit's readline interface keeps its state in globals and calls back a
// plain function: one terminal input at a time, found through `active`.
struct terminal_line_input::impl {
  impl(asio::any_io_executor executor, std::string text)
      : prompt(std::move(text)),
        // A duplicate of stdin to wait on, so that closing it leaves fd 0 open.
        keys(executor, ::dup(STDIN_FILENO)),
        signals(executor, SIGINT, SIGTERM, SIGHUP) {}

  static void on_line(char* line) {
    impl* self = active;
    if (!self) {
      std::free(line);
      return;
    }
    if (!line) {
      // Ctrl-D on an empty line. libedit goes back to raw mode when this returns: remove the
      // handler (which restores the terminal) only after that.
      self->ended = true;
      asio::post(self->keys.get_executor(), [self] { self->stop(); });
      self->deliver(std::nullopt);
      return;
    }
    self->line_done = true;
    std::string text(line);
    std::free(line);
    if (text.find_first_not_of(" \t") != std::string::npos) ::add_history(text.c_str());
    self->deliver(std::move(text));
  }

  void wait_for_keys() {
    keys.async_wait(asio::posix::descriptor_base::wait_read,
                    [this](const boost::system::error_code& ec) {
                      if (ec || !installed || ended) return;
                      ::rl_callback_read_char();
                      if (!installed || ended) return;
                      if (line_done) {
                        // Some libedit versions leave the terminal line-buffered
                        // after a line until the next key: installing again
                        // starts the next line now (raw mode, empty, prompt).
                        line_done = false;
                        ::rl_callback_handler_install(prompt.c_str(), &impl::on_line);
                        std::fflush(out);
                      }
                      wait_for_keys();
                    });
  }

  void wait_for_signals() {
    signals.async_wait([this](const boost::system::error_code& ec, int signal_number) {
      if (ec) return;
      if (++signals_seen == 1) {
        deliver("quit!");
        wait_for_signals();
        return;
      }
      // The second: leave now, the terminal as it was.
      stop();
      boost::system::error_code ignored;
      signals.cancel(ignored);
      std::signal(signal_number, SIG_DFL);
      std::raise(signal_number);
    });
  }

  void print(std::FILE* stream, std::string_view text) {
    if (!installed) {
      std::fwrite(text.data(), 1, text.size(), stream);
      std::fflush(stream);
      return;
    }
    // Back to the start of the prompt's line, and clear from there down;
    // a line longer than the terminal is cleared from its last row only.
    std::fputs("\r\033[J", out);
    std::fflush(out);
    std::fwrite(text.data(), 1, text.size(), stream);
    std::fflush(stream);
    // Draws the prompt and the line again, the cursor where it was in it.
    ::rl_forced_update_display();
    std::fflush(out);
  }

  void stop() {
    if (!installed) return;
    installed = false;
    // Leaving: the prompt (and what was typed after it) goes.
    std::fputs("\r\033[J", out);
    std::fflush(out);
    ::rl_callback_handler_remove();
    boost::system::error_code ignored;
    keys.cancel(ignored);
    if (active == this) active = nullptr;
  }

  static inline impl* active = nullptr;
  std::string prompt;
  // The prompt's stream: stdout, or stderr when stdout is not the terminal
  // (the events go to a file, the prompt stays on the screen).
  std::FILE* out = ::isatty(STDOUT_FILENO) ? stdout : stderr;
  asio::posix::stream_descriptor keys;
  asio::signal_set signals;
  std::function<void(std::optional<std::string>)> deliver;
  bool installed = false;
  bool ended = false;
  bool line_done = false;  // the handler took a line during this key
  int signals_seen = 0;
};

terminal_line_input::terminal_line_input(asio::any_io_executor executor, std::string prompt)
    : impl_(std::make_unique<impl>(std::move(executor), std::move(prompt))) {}

terminal_line_input::~terminal_line_input() {
  stop();
}

void terminal_line_input::start(std::function<void(std::optional<std::string>)> deliver) {
  impl_->deliver = std::move(deliver);
  impl::active = impl_.get();
  // Signals are ours (quit!, then exit), not libedit's: it would re-raise them.
  // Read once, when libedit initializes.
  ::rl_catch_signals = 0;
  ::rl_instream = stdin;
  ::rl_outstream = impl_->out;
  // Tab inserts itself: there is nothing to complete (file names would be wrong).
  ::rl_bind_key('\t', ::rl_insert);
  ::using_history();
  ::rl_callback_handler_install(impl_->prompt.c_str(), &impl::on_line);
  impl_->installed = true;
  std::fflush(impl_->out);
  impl_->wait_for_keys();
  impl_->wait_for_signals();
}

void terminal_line_input::print(std::FILE* stream, std::string_view text) {
  impl_->print(stream, text);
}

void terminal_line_input::stop() {
  impl_->stop();
  boost::system::error_code ignored;
  impl_->signals.cancel(ignored);
}

}  // namespace agentws

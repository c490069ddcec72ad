#include "agentws/resume.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>

#include "agentws/scenario.hpp"

namespace agentws {

using json = nlohmann::json;

namespace {

json payload_of(const received_event& event) {
  json payload = json::parse(event.payload_json, nullptr, false);
  return payload.is_object() ? payload : json::object();
}

bool is_unreserved(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

std::string percent_encoded(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    if (is_unreserved(c)) {
      out += c;
    } else {
      const auto byte = static_cast<unsigned char>(c);
      out += '%';
      out += hex[byte >> 4];
      out += hex[byte & 0xf];
    }
  }
  return out;
}

}  // namespace

connected_session read_session_announcement(const received_event& connected) {
  connected_session session;
  session.key = connected.session;
  session.resumed = connected.resumed;
  session.resumes = !connected.session.empty() &&
                    std::find(connected.features.begin(), connected.features.end(), "resume") !=
                        connected.features.end();
  const json payload = payload_of(connected);
  if (auto limits = payload.find("limits"); limits != payload.end() && limits->is_object()) {
    if (auto grace = limits->find("max_detach_grace_ms");
        grace != limits->end() && grace->is_number_unsigned()) {
      session.max_detach_grace_ms = grace->get<std::uint64_t>();
    }
  }
  return session;
}

std::chrono::milliseconds next_reconnect_delay(std::chrono::milliseconds delay) {
  return std::min(delay * 2, longest_reconnect_delay);
}

std::uint64_t detach_grace_for(const connected_session& server) {
  const auto wanted = static_cast<std::uint64_t>(resume_grace.count());
  return server.max_detach_grace_ms ? std::min(wanted, *server.max_detach_grace_ms) : wanted;
}

std::string make_start_run_with(std::string_view run_id, const run_params_override& params,
                                const disconnect_options& disconnect) {
  if (!disconnect.on_disconnect && !disconnect.detach_grace_ms) {
    return make_start_run(run_id, params);
  }
  json message = json::parse(make_start_run(run_id, params));
  if (disconnect.on_disconnect) message["on_disconnect"] = *disconnect.on_disconnect;
  if (disconnect.detach_grace_ms) message["detach_grace_ms"] = *disconnect.detach_grace_ms;
  return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string target_with_session(std::string_view target, std::string_view key) {
  const std::size_t question = target.find('?');
  std::string out(target.substr(0, question));
  std::string query;
  if (question != std::string_view::npos) {
    std::string_view rest = target.substr(question + 1);
    while (!rest.empty()) {
      const std::size_t amp = rest.find('&');
      const std::string_view parameter = rest.substr(0, amp);
      // A session the URL already names gives way to the one chosen.
      if (!parameter.empty() && !parameter.starts_with("session=") && parameter != "session") {
        query.append(query.empty() ? "" : "&").append(parameter);
      }
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  query.append(query.empty() ? "" : "&").append("session=").append(percent_encoded(key));
  return out + "?" + query;
}

std::optional<std::string> session_key_problem(std::string_view key) {
  if (key.empty()) return "the key is empty";
  if (key.size() > 512)
    return "the key is " + std::to_string(key.size()) + " bytes, longer than 512";
  const bool visible =
      std::all_of(key.begin(), key.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (!visible) return "a key is made of visible ASCII characters";
  return std::nullopt;
}

std::optional<attach_request> parse_attach_request(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<attach_request> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  attach_request request;
  const std::size_t at = text.rfind('@');
  std::string_view run_id = text.substr(0, at);
  if (at != std::string_view::npos) {
    const std::string_view seq = text.substr(at + 1);
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(seq.data(), seq.data() + seq.size(), value);
    if (seq.empty() || ec != std::errc{} || end != seq.data() + seq.size() || value < -1) {
      return fail("is not RUN or RUN@SEQ with SEQ an integer from -1 to " +
                  std::to_string(INT64_MAX));
    }
    request.after_seq = value;
  }
  if (auto problem = run_id_problem(run_id)) return fail(*problem);
  request.run_id = std::string(run_id);
  return request;
}

void resume_book::follow(const std::string& run_id, std::int64_t after_seq) {
  auto [it, inserted] = runs_.try_emplace(run_id);
  if (!inserted && !it->second.ended) return;
  it->second = followed_run{after_seq, false};
}

void resume_book::forget(const std::string& run_id) {
  runs_.erase(run_id);
  reattaching_.erase(run_id);
}

bool resume_book::take(const received_event& event) {
  if (event.kind == event_kind::run_attached && event.last_seq) {
    // Attached after a seq the run has not reached: its own events from
    // last_seq on are new here, the terminal included.
    if (auto it = runs_.find(event.run_id);
        it != runs_.end() && it->second.cursor > static_cast<std::int64_t>(*event.last_seq)) {
      it->second.cursor = static_cast<std::int64_t>(*event.last_seq);
    }
    return true;
  }
  if (!event.seq || event.run_id.empty()) return true;
  const auto seq = static_cast<std::int64_t>(*event.seq);
  auto [it, inserted] = runs_.try_emplace(event.run_id);
  followed_run& run = it->second;
  if (inserted) {
    run.cursor = seq;
    run.ended = is_terminal(event.kind);
    return true;
  }
  // A run_id reused after its run ended: the new run counts from seq 0 again.
  if (run.ended && event.kind == event_kind::run_started) {
    run = followed_run{seq, false};
    return true;
  }
  if (seq <= run.cursor) return false;
  run.cursor = seq;
  if (is_terminal(event.kind)) run.ended = true;
  return true;
}

std::vector<attach_request> resume_book::reattach_all(
    const std::function<bool(const std::string&)>& still_wanted) {
  std::vector<attach_request> out;
  for (const auto& [run_id, run] : runs_) {
    if (run.ended || (still_wanted && !still_wanted(run_id))) continue;
    out.push_back({run_id, run.cursor});
    reattaching_.insert(run_id);
  }
  return out;
}

reattach_outcome resume_book::on_reattach_answer(const received_event& event) {
  const auto waiting = reattaching_.find(event.run_id);
  if (waiting == reattaching_.end()) return reattach_outcome::not_ours;
  if (event.kind == event_kind::run_attached) {
    reattaching_.erase(waiting);
    return reattach_outcome::attached;
  }
  if (event.kind != event_kind::error || event.code != "run_not_found") {
    return reattach_outcome::not_ours;
  }
  reattaching_.erase(waiting);
  const auto run = runs_.find(event.run_id);
  if (run != runs_.end() && run->second.cursor < 0) return reattach_outcome::restart;
  runs_.erase(event.run_id);
  return reattach_outcome::lost;
}

std::optional<std::int64_t> resume_book::cursor(const std::string& run_id) const {
  const auto it = runs_.find(run_id);
  if (it == runs_.end()) return std::nullopt;
  return it->second.cursor;
}

std::vector<std::string> resume_book::unfinished() const {
  std::vector<std::string> out;
  for (const auto& [run_id, run] : runs_) {
    if (!run.ended) out.push_back(run_id);
  }
  return out;
}

std::optional<std::int64_t> gap_after_seq(const received_event& gap) {
  const json payload = payload_of(gap);
  const auto after = payload.find("after_seq");
  if (after == payload.end() || !after->is_number_integer()) return std::nullopt;
  return after->get<std::int64_t>();
}

std::string describe_resume_event(const received_event& event) {
  const json payload = payload_of(event);
  const auto number = [&](const json& object, const char* key) -> std::string {
    const auto it = object.find(key);
    return it != object.end() && it->is_number_integer() ? it->dump() : std::string("?");
  };
  switch (event.kind) {
    case event_kind::run_attached:
      return "state=" + printable(event.state.empty() ? "?" : event.state) +
             " last_seq=" + number(payload, "last_seq");
    case event_kind::run_gap: {
      std::string line = "after_seq=" + number(payload, "after_seq") +
                         " first_seq=" + number(payload, "first_seq");
      const auto after = payload.find("after_seq");
      if (after != payload.end() && after->is_number_integer() && event.first_seq &&
          static_cast<std::int64_t>(*event.first_seq) > after->get<std::int64_t>() + 1) {
        line += ": events " + std::to_string(after->get<std::int64_t>() + 1) + ".." +
                std::to_string(*event.first_seq - 1) + " are no longer kept";
      }
      return line;
    }
    case event_kind::runs: {
      const auto list = payload.find("runs");
      if (list == payload.end() || !list->is_array()) return "(no list)";
      std::string out = std::to_string(list->size()) + (list->size() == 1 ? " run" : " runs");
      for (const json& run : *list) {
        if (!run.is_object()) continue;
        const auto text = [&](const char* key) {
          const auto it = run.find(key);
          return it != run.end() && it->is_string() ? printable(it->get<std::string>())
                                                    : std::string("?");
        };
        const auto attached = run.find("attached");
        out += "\n  " + text("run_id") + "  " + text("agent") + "  " + text("state") +
               "  last_seq=" + number(run, "last_seq") +
               (attached != run.end() && *attached == true ? "  attached" : "");
      }
      return out;
    }
    default:
      return {};
  }
}

}  // namespace agentws

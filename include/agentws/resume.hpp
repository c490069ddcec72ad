// Runs that outlive their connection, from the client's side: what the
// server announced in `connected`, the session to present when reconnecting,
// the last `seq` printed of every run followed, and what to attach after a
// reconnect. Pure: the scenario and the interactive mode feed it the events
// they read and send what it says.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agentws/events.hpp"
#include "agentws/protocol.hpp"

namespace agentws {

// What a `connected` event says about resuming.
struct connected_session {
  std::string key;       // empty: the server has no sessions
  bool resumes = false;  // "resume" is among the features
  bool resumed = false;  // this connection continues the session it asked for
  // The longest detach_grace_ms a start_run may ask for (limits), when announced.
  std::optional<std::uint64_t> max_detach_grace_ms;
};
connected_session read_session_announcement(const received_event& connected);

// The back-off between reconnection attempts: 250 ms, doubling to 8 s.
inline constexpr std::chrono::milliseconds first_reconnect_delay{250};
inline constexpr std::chrono::milliseconds longest_reconnect_delay{8000};
std::chrono::milliseconds next_reconnect_delay(std::chrono::milliseconds delay);

// How long a run started with --reconnect waits on the server for its client
// to come back before the server cancels it (detach_grace_ms). A minute: the
// back-off above makes about a dozen attempts in that time (0.25 + 0.5 + 1 +
// 2 + 4 + 8 s, then every 8 s), enough to ride out a restarted proxy or a
// network blip, short enough that the runs of a client that is gone for good
// do not go on long without it.
inline constexpr std::chrono::milliseconds resume_grace{60'000};

// The grace to ask for: resume_grace, or less when the server allows less.
std::uint64_t detach_grace_for(const connected_session& server);

// How a run should outlive its connection: sent with start_run only when set.
struct disconnect_options {
  std::optional<std::string> on_disconnect;  // "cancel" or "continue"
  std::optional<std::uint64_t> detach_grace_ms;
};

// start_run with `on_disconnect` and `detach_grace_ms` when they are set; the
// same text as make_start_run() when they are not.
std::string make_start_run_with(std::string_view run_id, const run_params_override& params,
                                const disconnect_options& disconnect);

// The request target with `session=<key>` in its query (percent-encoded),
// replacing a session already there and keeping every other parameter:
// "/ws" -> "/ws?session=k", "/ws?token=t" -> "/ws?token=t&session=k".
std::string target_with_session(std::string_view target, std::string_view key);

// "--session: ..." problems: a key is 1..512 visible ASCII characters.
std::optional<std::string> session_key_problem(std::string_view key);

// A run to follow from a given point: --attach RUN[@SEQ], `attach RUN [SEQ]`.
struct attach_request {
  std::string run_id;
  std::int64_t after_seq = -1;  // -1: from the start (run_started included)
};

// Parses "RUN" or "RUN@SEQ" (SEQ -1 or more; the last '@' splits, so a run_id
// holding '@' is written with its SEQ: "a@b@-1"). nullopt with `error` set.
std::optional<attach_request> parse_attach_request(std::string_view text, std::string* error);

// What to do about the answer to an attach sent after a reconnect.
enum class reattach_outcome {
  not_ours,  // not an answer to a re-attach: handle it as usual
  attached,  // run_attached: the replay follows
  restart,   // run_not_found for a run whose start was never answered: the
             // server never had it, so start it again
  lost,      // run_not_found for a run that had started: the server forgot it
};

// The cursor of every run followed: the last seq printed, whether it ended.
class resume_book {
 public:
  // A start_run or attach_run was sent: follow `run_id` after `after_seq`.
  // A run_id already followed and not ended keeps its cursor (a second start
  // of a running id is refused by the server and changes nothing).
  void follow(const std::string& run_id, std::int64_t after_seq = -1);
  // Stop following (detached, refused, lost): nothing is re-attached for it.
  void forget(const std::string& run_id);

  // Whether `event` is new and is to be printed and tracked: false for a
  // run-scoped event whose seq is at or below its run's cursor (a replay of
  // one already printed). A new one moves the cursor. Events without a seq
  // (a server without resume, connection-scoped events) are always new.
  bool take(const received_event& event);

  // After a reconnect that resumed the session: an attach for every run
  // followed and not ended, after its cursor, in run_id order. Each is
  // remembered as a re-attach until its answer comes.
  // `still_wanted` says whether a run is still waited for (a refused start
  // is followed here but not re-attached).
  std::vector<attach_request> reattach_all(
      const std::function<bool(const std::string&)>& still_wanted = {});
  // Routes the answer to a re-attach (run_attached, or the error run_not_found).
  reattach_outcome on_reattach_answer(const received_event& event);

  // The last seq printed for `run_id` (-1: none yet); nullopt when not followed.
  std::optional<std::int64_t> cursor(const std::string& run_id) const;
  // Runs followed and not ended, in run_id order.
  std::vector<std::string> unfinished() const;

 private:
  struct followed_run {
    std::int64_t cursor = -1;
    bool ended = false;
  };
  std::map<std::string, followed_run> runs_;
  std::set<std::string> reattaching_;
};

// run_gap's after_seq (-1 when the replay asked for everything); nullopt
// when absent.
std::optional<std::int64_t> gap_after_seq(const received_event& gap);

// Readable text for the version 2 answers (format_event_line's tail):
//   run_attached: "state=running last_seq=12"
//   run_gap: "after_seq=3 first_seq=40: events 4..39 are no longer kept"
//   runs: " 2 runs" and one line per run: "  r1  demo  running  last_seq=5  attached"
// Empty for other events.
std::string describe_resume_event(const received_event& event);

}  // namespace agentws

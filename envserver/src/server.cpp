// The socket loop of the env server (server.h): requests in, results out, one thread, never blocked by a game.
#include "server.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "game_worker.h"
#include "lifetime.h"
#include "protocol.h"
#include "server_util.h"

namespace beast {

static_assert(kObsSide == static_cast<int>(proto::kSide), "protocol.h and doom_env.h disagree on the side");
static_assert(kAudioChannels == static_cast<int>(proto::kAudioChannels) &&
                  kAudioSamples == static_cast<int>(proto::kAudioSamples),
              "protocol.h and doom_env.h disagree on the audio shape");

namespace {

// Which client is waiting for an env's result: a sync reset/step job (all envs, one reply) or an async peer.
struct SyncJob {
  std::string peer;
  uint32_t seq = 0;
  int remaining = 0;
  std::string error;
};
struct Slot {
  bool busy = false;
  std::shared_ptr<SyncJob> job;
  std::string async_peer;
};

std::string json_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + proto::json_quote(items[i]);
  return out + "]";
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions opts)
      : options(std::move(opts)), engine_pids(static_cast<std::size_t>(options.num_envs)), slots(engine_pids.size()) {}

  int run();
  void start_games();
  void serve();
  void shutdown_games();
  void handle(std::vector<zmq::message_t>& frames);
  void answer_zap();
  void on_finished(const std::vector<int>& ids);
  void send(const std::string& peer, std::vector<zmq::message_t> frames);
  void send_results(proto::MsgType type, const std::string& peer, uint32_t seq, const std::vector<int>& ids);
  std::string info_json() const;
  StopReason stop_reason() const { return static_cast<StopReason>(stop.load()); }
  void request_stop(StopReason reason) {
    int expected = 0;
    stop.compare_exchange_strong(expected, static_cast<int>(reason));
  }

  ServerOptions options;
  BlockedSignals signals;  // before the context and every thread, so all of them inherit the mask
  std::atomic<int> stop{0};
  std::vector<std::atomic<pid_t>> engine_pids;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  // With CURVE, the ZAP handler (ZeroMQ RFC 27) the router's handshakes are checked by: only the client keys of
  // the allow-list get in (the "ironhouse" pattern); a key refused is logged once.
  zmq::socket_t zap{context, zmq::socket_type::rep};
  std::set<std::string> allowed_clients, refused_logged;
  CompletionQueue completions;
  std::vector<std::unique_ptr<GameWorker>> workers;
  std::vector<Slot> slots;
  std::map<std::string, std::vector<int>> async_ready;  // peer -> envs finished this poll round
  Clock::time_point last_heard = Clock::now();
  int num_actions = 0;
  std::vector<std::string> action_names;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;
int Server::run() { return impl_->run(); }

int Server::Impl::run() {
  ShutdownGuard guard(signals.set(), stop, engine_pids);
  socket.set(zmq::sockopt::linger, 0);
  // Requests are a few bytes per env; a bigger frame is garbage and ZeroMQ drops the connection that sent it.
  socket.set(zmq::sockopt::maxmsgsize, int64_t{1} << 20);
  zap.set(zmq::sockopt::linger, 0);
  if (!options.curve_secret_key_file.empty()) {
    const CurveKeys keys = read_curve_keys(options.curve_secret_key_file);
    for (const std::string& key : read_allowed_clients(options.curve_allowed_clients_file)) {
      allowed_clients.insert(key);
    }
    zap.bind("inproc://zeromq.zap.01");  // before the router binds: no handshake may go unchecked
    socket.set(zmq::sockopt::zap_domain, "beast");
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  }
  try {
    socket.bind(options.address);
  } catch (const zmq::error_t& e) {
    log("error: cannot bind " + options.address + ": " + e.what());
    return 1;
  }
  int status = 0;
  start_games();
  if (stop_reason() == StopReason::kNone) {
    std::printf("READY %s\n", options.address.c_str());
    std::fflush(stdout);
    serve();
  } else if (stop_reason() == StopReason::kStartupFailed) {
    status = 1;
  }
  log(std::string("stopping: ") + describe(stop_reason()));
  shutdown_games();
  socket.close();
  // Anything left in our group (an engine that outlived its DoomEnv) goes now; we only lead the group when a
  // launcher started us in a session of our own, as beast.envs.EnvServer does.
  kill_group_members(engine_pids);
  return status;
}

void Server::Impl::start_games() {
  workers.reserve(engine_pids.size());
  for (int i = 0; i < options.num_envs; ++i) {
    workers.push_back(std::make_unique<GameWorker>(i, options, completions, engine_pids[i]));
  }
  int started = 0;
  const auto begin = Clock::now();
  while (started < options.num_envs && stop_reason() == StopReason::kNone) {
    pollfd pfd{completions.fd(), POLLIN, 0};
    poll(&pfd, 1, 100);
    for (int id : completions.drain()) {
      ++started;
      const Outcome& out = workers[id]->outcome();
      if (!out.ok) {
        log("error: " + out.error);
        request_stop(StopReason::kStartupFailed);
      }
    }
    if (seconds_since(begin) > options.startup_timeout_s) {
      char text[96];
      std::snprintf(text, sizeof text, "error: the games did not start within %g s", options.startup_timeout_s);
      log(text);
      request_stop(StopReason::kStartupFailed);
    }
  }
  if (stop_reason() == StopReason::kNone) {
    num_actions = workers[0]->num_actions();
    action_names = workers[0]->action_names();
  }
}

void Server::Impl::shutdown_games() {
  for (auto& w : workers) w->request_quit();
  const auto begin = Clock::now();
  auto all_exited = [this] {
    for (auto& w : workers) {
      if (!w->exited()) return false;
    }
    return true;
  };
  while (!all_exited() && seconds_since(begin) < 3.0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // A game stuck in a step (hung engine) is released by killing its engine: DoomEnv::step then throws.
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (!workers[i]->exited() && engine_pids[i] > 0) kill(engine_pids[i], SIGKILL);
  }
  workers.clear();
}

void Server::Impl::serve() {
  while (stop_reason() == StopReason::kNone) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, completions.fd(), ZMQ_POLLIN, 0},
                               {zap.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 3, std::chrono::milliseconds(100));
    if (items[2].revents & ZMQ_POLLIN) answer_zap();
    if (items[0].revents & ZMQ_POLLIN) {
      // Bounded so a flood of requests cannot starve result delivery.
      for (int n = 0; n < 256; ++n) {
        std::vector<zmq::message_t> frames;
        if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
        last_heard = Clock::now();
        handle(frames);
      }
    }
    if (items[1].revents & ZMQ_POLLIN) on_finished(completions.drain());
    // Everything that finished since the last wake-up leaves in one message per client.
    for (auto& [peer, ids] : async_ready) send_results(proto::MsgType::kAsyncResults, peer, 0, ids);
    async_ready.clear();
    if (options.idle_timeout_s > 0 && seconds_since(last_heard) > options.idle_timeout_s) {
      char text[96];
      std::snprintf(text, sizeof text, "heard nothing from any client for %g s", options.idle_timeout_s);
      log(text);
      request_stop(StopReason::kIdle);
    }
  }
}

void Server::Impl::answer_zap() {
  // Request: version, request id, domain, address, identity, mechanism, credentials (CURVE: the client's 32-byte
  // public key). Reply: version, request id, status code, status text, user id, metadata.
  std::vector<zmq::message_t> req;
  if (!zmq::recv_multipart(zap, std::back_inserter(req), zmq::recv_flags::dontwait)) return;
  auto part = [&req](std::size_t i) { return i < req.size() ? req[i].to_string() : std::string(); };
  std::string key = "(none)";
  if (part(5) == "CURVE" && req.size() > 6 && req[6].size() == 32) {
    char z85[41] = {};
    zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
    key = z85;
  }
  const bool ok = allowed_clients.count(key) != 0;
  if (!ok && refused_logged.insert(key).second) {
    log("refused a client at " + part(3) + ": its CURVE public key " + key +
        " is not in --curve-allowed-clients-file");
  }
  const std::string reply[] = {"1.0", part(1), ok ? "200" : "400", ok ? "OK" : "client key not allowed",
                               ok ? key : "", ""};
  for (std::size_t i = 0; i < 6; ++i) {
    zap.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

void Server::Impl::handle(std::vector<zmq::message_t>& frames) {
  // frames[0] is the ROUTER's peer identity; the client's message follows.
  const std::string peer = frames[0].to_string();
  std::vector<zmq::message_t> body(std::make_move_iterator(frames.begin() + 1), std::make_move_iterator(frames.end()));
  const uint32_t seq = body.empty() ? 0 : proto::peek_seq(body[0]);
  proto::Request req;
  try {
    req = proto::parse_request(body, options.num_envs, num_actions);
  } catch (const proto::ProtocolError& e) {
    send(peer, proto::make_error(seq, e.code(), e.what()));
    return;
  }
  using proto::MsgType;
  switch (req.type) {
    case MsgType::kHello:
      send(peer, proto::make_info(seq, info_json()));
      return;
    case MsgType::kPing:
      send(peer, proto::make_simple(MsgType::kPong, seq));
      return;
    case MsgType::kClose:
      send(peer, proto::make_simple(MsgType::kClosed, seq));
      request_stop(StopReason::kClose);
      return;
    default:
      break;
  }
  // Reset/step/send: check every env before starting any, so a rejected request changes nothing.
  for (int32_t id : req.env_ids) {
    if (slots[id].busy) {
      send(peer, proto::make_error(seq, proto::ErrorCode::kBusy,
                                   "env " + std::to_string(id) + " is still stepping; wait for its result first"));
      return;
    }
  }
  if (req.type == MsgType::kReset) {
    for (const Slot& s : slots) {
      if (s.busy) {
        send(peer, proto::make_error(seq, proto::ErrorCode::kBusy, "reset while envs are still stepping"));
        return;
      }
    }
    req.env_ids.clear();
    for (int i = 0; i < options.num_envs; ++i) req.env_ids.push_back(i);
  }
  std::shared_ptr<SyncJob> job;
  if (req.type != MsgType::kSend) {
    job = std::make_shared<SyncJob>();
    job->peer = peer;
    job->seq = seq;
    job->remaining = static_cast<int>(req.env_ids.size());
  }
  for (std::size_t j = 0; j < req.env_ids.size(); ++j) {
    const int id = req.env_ids[j];
    Slot& slot = slots[id];
    slot.busy = true;
    slot.job = job;
    slot.async_peer = job ? std::string() : peer;
    if (req.type == MsgType::kReset) {
      workers[id]->start_reset();
    } else {
      workers[id]->start_step(req.actions[j]);
    }
  }
}

void Server::Impl::on_finished(const std::vector<int>& ids) {
  last_heard = Clock::now();  // a long restart must not count as client silence
  for (int id : ids) {
    Slot& slot = slots[id];
    slot.busy = false;
    const Outcome& out = workers[id]->outcome();
    if (std::shared_ptr<SyncJob> job = std::move(slot.job)) {
      if (!out.ok && job->error.empty()) job->error = out.error;
      if (--job->remaining == 0) {
        if (job->error.empty()) {
          std::vector<int> all(static_cast<std::size_t>(options.num_envs));
          for (int i = 0; i < options.num_envs; ++i) all[i] = i;
          send_results(proto::MsgType::kResults, job->peer, job->seq, all);
        } else {
          send(job->peer, proto::make_error(job->seq, proto::ErrorCode::kEnvFailed, job->error));
        }
      }
    } else if (!out.ok) {
      send(slot.async_peer, proto::make_error(0, proto::ErrorCode::kEnvFailed, out.error));
    } else {
      async_ready[slot.async_peer].push_back(id);
    }
  }
}

void Server::Impl::send_results(proto::MsgType type, const std::string& peer, uint32_t seq,
                                const std::vector<int>& ids) {
  const std::size_t num_vars = var_names().size();
  proto::ResultsWriter w(type, seq, ids.size(), num_vars);
  for (std::size_t j = 0; j < ids.size(); ++j) {
    const GameWorker& g = *workers[ids[j]];
    const StepResult& r = g.outcome().result;
    const int32_t env_id = ids[j];
    const float reward = r.reward, ep_return = r.episode_return;
    const uint8_t done = r.done, truncated = r.truncated, crashed = g.outcome().crashed;
    const int32_t ep_length = r.episode_length;
    // Each field's source is named by its id, not its position: a field added to the schema but not here is a
    // -Wswitch warning and a logic_error, never another field's bytes.
    auto source = [&](proto::Field id) -> const void* {
      switch (id) {
        case proto::Field::kEnvIds: return &env_id;
        case proto::Field::kRgb: return g.rgb();
        case proto::Field::kDepth: return g.depth();
        case proto::Field::kEnemy: return g.enemy();
        case proto::Field::kAudio: return g.audio();
        case proto::Field::kVars: return g.vars();
        case proto::Field::kFinalVars: return g.final_vars();
        case proto::Field::kReward: return &reward;
        case proto::Field::kDone: return &done;
        case proto::Field::kTruncated: return &truncated;
        case proto::Field::kCrashed: return &crashed;
        case proto::Field::kEpisodeReturn: return &ep_return;
        case proto::Field::kEpisodeLength: return &ep_length;
      }
      throw std::logic_error("a result field without a source");
    };
    const auto& fields = proto::result_fields();
    for (std::size_t f = 0; f < fields.size(); ++f) {
      std::memcpy(w.row(f, j), source(fields[f].id), w.row_bytes(f));  // x86/ARM are little-endian, the wire order
    }
  }
  send(peer, w.release());
}

void Server::Impl::send(const std::string& peer, std::vector<zmq::message_t> frames) {
  // ROUTER never blocks: a vanished peer or a full queue drops the message, and the server serves on.
  try {
    socket.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const bool last = i + 1 == frames.size();
      socket.send(frames[i], last ? zmq::send_flags::dontwait : zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
  } catch (const zmq::error_t& e) {
    log(std::string("dropped a reply: ") + e.what());
  }
}

std::string Server::Impl::info_json() const {
  std::ostringstream js;
  const std::size_t g = var_names().size();
  js << "{\"protocol_version\":" << proto::kVersion << ",\"num_envs\":" << options.num_envs
     << ",\"num_actions\":" << num_actions << ",\"action_names\":" << json_list(action_names)
     << ",\"var_names\":" << json_list(var_names())
     << ",\"obs\":" << proto::fields_json(g, {"rgb", "depth", "enemy", "audio", "vars"})
     << ",\"results\":" << proto::fields_json(g)
     << ",\"frame_skip\":" << options.env.frame_skip << ",\"doom_skill\":" << options.env.doom_skill
     << ",\"scenario\":" << proto::json_quote(options.env.scenario)
     << ",\"screen_resolution\":" << proto::json_quote(options.env.screen_resolution)
     << ",\"engine_version\":" << proto::json_quote(options.engine_version)
     << ",\"library_version\":" << proto::json_quote(library_version()) << ",\"seed\":" << options.seed
     << ",\"server_pid\":" << getpid() << ",\"engine_pids\":[";
  for (std::size_t i = 0; i < engine_pids.size(); ++i) js << (i ? "," : "") << engine_pids[i].load();
  js << "]}";
  return js.str();
}

}  // namespace beast

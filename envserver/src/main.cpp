// beast-envserver: parses flags, checks the engine, runs beast::Server. Everything else lives in the library.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <sys/stat.h>

#include "server.h"

namespace {

// The flags' defaults are those of ServerOptions (server.h), the one place this binary keeps them; the help text
// prints them from there. beast's launcher passes every flag, and tests/envs check these defaults against Config.
std::string usage(const beast::ServerOptions& d) {
  char text[4096];
  std::snprintf(text, sizeof text, R"(usage: beast-envserver --scenario NAME_OR_CFG --num-envs K [options]

Hosts K ViZDoom games behind one ZeroMQ ROUTER socket (protocol: docs/protocol.md). Prints
"READY <address>" on stdout once every game is up; logs go to stderr.

  --address ADDR               where to bind (default ipc://$TMPDIR/beast-envserver-<pid>.sock). tcp:// on a
                               non-loopback interface requires --curve-secret-key-file.
  --scenario NAME_OR_CFG       built-in scenario name (basic, deadly_corridor, ...: a .cfg in
                               VIZDOOM_DIR/scenarios) or the path of a .cfg file. Required.
  --num-envs K                 games hosted by this process (1..1024). Required.
  --seed S                     base seed (default %llu); env i's engine seed is splitmix64(S + i), and after its
                               g-th crash splitmix64(splitmix64(S + i) + g).
  --frame-skip N               engine tics per step (default %d).
  --doom-skill N               difficulty 1 (easiest) .. 5 (hardest); 0 keeps the scenario's own (default %d).
  --resolution RES             ViZDoom screen resolution (default %s).
  --enemy-classes A,B,...      actor classes counted in the enemy mask (default: none, an empty mask).
  --vizdoom-dir DIR            folder of the installed vizdoom 1.3.2 wheel (engine binary, wads, scenarios);
                               default $BEAST_VIZDOOM_DIR.
  --idle-timeout-s T           exit after T seconds without a message from any client (default %g; 0: never).
  --startup-timeout-s T        fail when the games are not up after T seconds (default %g).
  --curve-secret-key-file F    serve with CURVE encryption; F holds Z85 keys as lines
                               public-key = "<40 chars>" and secret-key = "<40 chars>" (public optional).
  --curve-allowed-clients-file F  with CURVE, required: the client public keys served (one per line, bare or
                               public-key = "..."); every other client is refused and logged.
  --help                       this text.

The server exits by itself when its parent process dies or after the idle timeout, closing its games; when it
leads its process group (started with setsid, as beast.envs.EnvServer does) it also SIGKILLs what is left in it.
Exit status: 0 after close/idle/signal/parent death, 1 when the games fail to start, 2 for bad flags or a
ViZDoom engine/library version mismatch.
)",
                static_cast<unsigned long long>(d.seed), d.env.frame_skip, d.env.doom_skill,
                d.env.screen_resolution.c_str(), d.idle_timeout_s, d.startup_timeout_s);
  return text;
}

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "beast-envserver: error: %s (see --help)\n", message.c_str());
  std::exit(2);
}

long long parse_int(const std::string& flag, const std::string& text, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    usage_error(flag + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                text + "'");
  }
  return v;
}

double parse_seconds(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0.0)) usage_error(flag + ": expected seconds >= 0, got '" + text + "'");
  return v;
}

bool is_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  const std::map<std::string, bool> known = {
      {"--address", true},      {"--scenario", true},          {"--num-envs", true},
      {"--seed", true},         {"--frame-skip", true},        {"--resolution", true},
      {"--doom-skill", true},
      {"--enemy-classes", true}, {"--vizdoom-dir", true},      {"--idle-timeout-s", true},
      {"--startup-timeout-s", true}, {"--curve-secret-key-file", true},
      {"--curve-allowed-clients-file", true}, {"--help", false}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    const auto eq = arg.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const auto it = known.find(arg);
    if (it == known.end()) usage_error("unknown flag '" + arg + "'");
    if (it->second && !inline_value) {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      value = argv[++i];
    }
    flags[arg] = value;
  }
  beast::ServerOptions opts;  // holds the defaults until a flag overrides one
  if (flags.count("--help")) {
    std::fputs(usage(opts).c_str(), stdout);
    return 0;
  }
  auto get = [&](const std::string& f, const std::string& fallback) {
    const auto it = flags.find(f);
    return it == flags.end() ? fallback : it->second;
  };
  auto given = [&](const std::string& f) { return flags.count(f) != 0; };

  if (!flags.count("--scenario")) usage_error("--scenario is required");
  if (!flags.count("--num-envs")) usage_error("--num-envs is required");
  opts.num_envs = static_cast<int>(parse_int("--num-envs", flags["--num-envs"], 1, 1024));
  if (given("--seed")) opts.seed = static_cast<uint64_t>(parse_int("--seed", flags["--seed"], 0, (1LL << 62)));
  if (given("--frame-skip")) {
    opts.env.frame_skip = static_cast<int>(parse_int("--frame-skip", flags["--frame-skip"], 1, 1000));
  }
  if (given("--doom-skill")) {
    opts.env.doom_skill = static_cast<int>(parse_int("--doom-skill", flags["--doom-skill"], 0, 5));
  }
  opts.env.screen_resolution = get("--resolution", opts.env.screen_resolution);
  if (opts.env.screen_resolution.rfind("RES_", 0) != 0) {
    usage_error("--resolution: expected a ViZDoom resolution such as RES_160X120, got '" +
                opts.env.screen_resolution + "'");
  }
  if (flags.count("--enemy-classes")) {
    std::istringstream list(flags["--enemy-classes"]);
    for (std::string name; std::getline(list, name, ',');) {
      if (!name.empty()) opts.env.enemy_classes.push_back(name);
    }
  }
  if (given("--idle-timeout-s")) opts.idle_timeout_s = parse_seconds("--idle-timeout-s", flags["--idle-timeout-s"]);
  if (given("--startup-timeout-s")) {
    opts.startup_timeout_s = parse_seconds("--startup-timeout-s", flags["--startup-timeout-s"]);
  }

  const char* env_dir = std::getenv("BEAST_VIZDOOM_DIR");
  opts.env.vizdoom_dir = get("--vizdoom-dir", env_dir ? env_dir : "");
  if (opts.env.vizdoom_dir.empty()) {
    usage_error("--vizdoom-dir is required (the installed vizdoom wheel's folder, e.g. "
                ".venv/lib/python3.11/site-packages/vizdoom)");
  }

  const std::string scenario = flags["--scenario"];
  const bool ends_cfg = scenario.size() > 4 && scenario.compare(scenario.size() - 4, 4, ".cfg") == 0;
  const bool is_path = ends_cfg || scenario.find('/') != std::string::npos;
  opts.env.scenario = is_path ? scenario : opts.env.vizdoom_dir + "/scenarios/" + scenario + ".cfg";
  if (!is_file(opts.env.scenario)) {
    usage_error("--scenario: no such scenario '" + scenario + "' (looked for " + opts.env.scenario +
                "); give a built-in name such as basic or deadly_corridor, or a .cfg path");
  }

  opts.curve_secret_key_file = get("--curve-secret-key-file", "");
  opts.curve_allowed_clients_file = get("--curve-allowed-clients-file", "");
  char default_address[256];
  const char* tmp = std::getenv("TMPDIR");
  std::snprintf(default_address, sizeof default_address, "ipc://%s/beast-envserver-%d.sock",
                tmp && *tmp ? tmp : "/tmp", static_cast<int>(getpid()));
  opts.address = get("--address", default_address);
  if (!beast::is_loopback_or_local(opts.address) && opts.curve_secret_key_file.empty()) {
    usage_error("--address " + opts.address +
                " is reachable from other machines; serving it needs --curve-secret-key-file (CURVE encryption), "
                "or bind tcp://127.0.0.1:PORT / ipc:// instead");
  }
  if (!opts.curve_secret_key_file.empty()) {
    try {
      beast::read_curve_keys(opts.curve_secret_key_file);
    } catch (const std::exception& e) {
      usage_error(std::string("--curve-secret-key-file: ") + e.what());
    }
    if (opts.curve_allowed_clients_file.empty()) {
      usage_error("--curve-secret-key-file needs --curve-allowed-clients-file: the public keys of the clients to "
                  "serve (CURVE without it would serve anyone who knows this server's public key)");
    }
    try {
      beast::read_allowed_clients(opts.curve_allowed_clients_file);
    } catch (const std::exception& e) {
      usage_error(std::string("--curve-allowed-clients-file: ") + e.what());
    }
  } else if (!opts.curve_allowed_clients_file.empty()) {
    usage_error("--curve-allowed-clients-file needs --curve-secret-key-file (the allow-list is checked by CURVE)");
  }

  try {
    opts.engine_version = beast::engine_version(opts.env.vizdoom_dir);
  } catch (const std::exception& e) {
    usage_error(std::string("--vizdoom-dir: ") + e.what());
  }
  if (opts.engine_version != beast::library_version()) {
    std::fprintf(stderr,
                 "beast-envserver: error: the ViZDoom engine in %s is %s but this server links the %s client "
                 "library; install vizdoom==%s in the venv (make venv) and rebuild (make envserver)\n",
                 opts.env.vizdoom_dir.c_str(), opts.engine_version.c_str(), beast::library_version().c_str(),
                 beast::library_version().c_str());
    return 2;
  }

  try {
    beast::Server server(std::move(opts));
    return server.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "beast-envserver: error: %s\n", e.what());
    return 1;
  }
}

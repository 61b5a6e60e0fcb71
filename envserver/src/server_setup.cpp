// What the server needs before it serves: seeds, version checks, address policy and CURVE keys (server.h).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <system_error>

#include <zmq.h>

#include "server.h"
#include "server_util.h"

#if __has_include("ViZDoomVersion.h")
#include "ViZDoomVersion.h"
#define BEAST_VIZDOOM_LIB_VERSION VIZDOOM_LIB_VERSION_STR
#else
// envserver/build.sh builds exactly this version of the client library and checks its ViZDoomVersion.h.
#define BEAST_VIZDOOM_LIB_VERSION "1.3.2"
#endif


namespace beast {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t env_seed(uint64_t base_seed, int index, uint64_t generation) {
  const uint64_t first = splitmix64(base_seed + static_cast<uint64_t>(index));
  return generation == 0 ? first : splitmix64(first + generation);
}

std::string library_version() { return BEAST_VIZDOOM_LIB_VERSION; }

std::string engine_version(const std::string& vizdoom_dir) {
  const std::string binary = vizdoom_dir + "/vizdoom";
  if (access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error("no ViZDoom engine binary at " + binary +
                             "; pass --vizdoom-dir with the installed vizdoom wheel's package folder");
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  const pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    // `vizdoom --version` prints its banner and then asks for an IWAD on stdin; /dev/null makes it exit at once.
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDIN_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    execl(binary.c_str(), binary.c_str(), "--version", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string output;
  const auto start = Clock::now();
  while (output.find('\n') == std::string::npos && seconds_since(start) < 10.0) {
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;
    char buf[512];
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    output.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  kill(pid, SIGKILL);  // it has said what we need; never leave it waiting
  waitpid(pid, nullptr, 0);
  std::smatch match;
  if (!std::regex_search(output, match, std::regex(R"(ViZDoom (\d+\.\d+\.\d+))"))) {
    throw std::runtime_error("could not read the version of " + binary + " (it printed '" +
                             output.substr(0, output.find('\n')) + "'); reinstall the vizdoom wheel (make venv)");
  }
  return match[1];
}

bool is_loopback_or_local(const std::string& address) {
  if (address.rfind("ipc://", 0) == 0 || address.rfind("inproc://", 0) == 0) return true;
  if (address.rfind("tcp://", 0) != 0) return false;
  std::string host = address.substr(6);
  const auto colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "lo" || host == "::1" || host.rfind("127.", 0) == 0;
}

CurveKeys read_curve_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the CURVE key file " + path);
  CurveKeys keys;
  const std::regex line_re(R"re(^\s*(public|secret)-key\s*=\s*"([^"]*)")re");
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, line_re)) continue;
    (m[1] == "public" ? keys.public_key : keys.secret_key) = m[2];
  }
  if (keys.secret_key.size() != 40) {
    throw std::runtime_error("the CURVE key file " + path + " needs a line secret-key = \"<40 Z85 chars>\"");
  }
  char derived[41] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    throw std::runtime_error("the secret key in " + path + " is not valid Z85");
  }
  if (!keys.public_key.empty() && keys.public_key != derived) {
    throw std::runtime_error("the public key in " + path + " does not belong to its secret key");
  }
  keys.public_key = derived;
  return keys;
}

std::vector<std::string> read_allowed_clients(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the CURVE allow-list " + path);
  const std::regex key_line(R"re(^\s*public-key\s*=\s*"([^"]*)"\s*$)re");
  std::vector<std::string> keys;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const auto start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos) continue;
    const std::string trimmed = line.substr(start, line.find_last_not_of(" \t\r") - start + 1);
    // Z85's '#' is its last digit (84); the first of a 32-byte key's 40 digits is at most 82: '#' starts comments.
    if (trimmed[0] == '#') continue;
    const bool bare = trimmed.size() == 40 && trimmed.find_first_of(" \t") == std::string::npos;
    std::smatch m;
    const std::string key = bare ? trimmed : std::regex_match(line, m, key_line) ? m[1].str() : "";
    uint8_t raw[32];
    if (key.size() != 40 || zmq_z85_decode(raw, key.c_str()) == nullptr) {
      throw std::runtime_error("line " + std::to_string(number) + " of the CURVE allow-list " + path +
                               " is not a 40-character Z85 public key");
    }
    keys.push_back(key);
  }
  if (keys.empty()) throw std::runtime_error("the CURVE allow-list " + path + " holds no client key");
  return keys;
}

}  // namespace beast

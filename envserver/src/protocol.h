// The env server's wire format: one fixed 24-byte header frame, then the request's arrays (one frame each) or the
// results' arrays (all in one body frame).
//
// docs/protocol.md is the contract and beast/envs/protocol.py mirrors it; this header is the C++ side. Arrays
// travel as raw little-endian bytes, one ZeroMQ frame each, so a client maps them with np.frombuffer and nobody
// serialises anything on the hot path. Everything here is pure (no sockets, no games) so it is easy to test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace beast::proto {

constexpr uint32_t kMagic = 0x54534542;  // the bytes "BEST" read as a little-endian u32
constexpr uint16_t kVersion = 2;
constexpr std::size_t kHeaderSize = 24;
// Observation geometry on the wire; server.cpp static_asserts that doom_env.h agrees.
constexpr std::size_t kSide = 64;
constexpr std::size_t kAudioChannels = 2;
constexpr std::size_t kAudioSamples = 1024;

enum class MsgType : uint8_t {
  // requests, client -> server
  kHello = 0x01,
  kReset = 0x02,
  kStep = 0x03,
  kSend = 0x04,
  kPing = 0x05,
  kClose = 0x06,
  // replies, server -> client
  kInfo = 0x81,
  kResults = 0x82,       // reply to kReset / kStep: every env, ordered by env id
  kAsyncResults = 0x83,  // results of kSend'ed envs, streamed as games finish
  kPong = 0x85,
  kClosed = 0x86,
  kError = 0xFF,
};

enum class ErrorCode : uint32_t {
  kOk = 0,
  kMalformed = 1,    // header too short/long, wrong magic, unknown type
  kBadVersion = 2,   // protocol version differs
  kBadFrames = 3,    // wrong frame count, frame sizes or count field
  kBadEnvId = 4,     // env id out of range or repeated
  kBadAction = 5,    // action outside [0, num_actions)
  kBusy = 6,         // an env named (or, for reset/step, any env) is still stepping
  kEnvFailed = 7,    // a game died and could not be recreated
};

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  MsgType type = MsgType::kHello;
  uint8_t flags = 0;
  uint32_t count = 0;   // envs in the message (requests: actions; results: envs reported)
  uint32_t seq = 0;     // chosen by the client, echoed in the reply (0 in async results)
  uint32_t status = 0;  // ErrorCode in kError replies, else 0
  uint32_t reserved = 0;
};

// A request the server cannot serve; `code` goes into the error reply's status field.
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

void write_header(const Header& header, uint8_t* out);  // writes kHeaderSize bytes
zmq::message_t make_header(const Header& header);

// Best effort: the seq of a frame that may not be a valid header (0 when too short), so errors can echo it.
uint32_t peek_seq(const zmq::message_t& frame);

struct Request {
  MsgType type = MsgType::kHello;
  uint32_t seq = 0;
  std::vector<int32_t> env_ids;  // kSend: the envs to step; kStep: 0..K-1
  std::vector<int32_t> actions;  // kStep, kSend: one per env id
};

// Validates everything that does not depend on the server's state (busy envs are the server's business).
// Throws ProtocolError naming the problem.
Request parse_request(const std::vector<zmq::message_t>& frames, int num_envs, int num_actions);

// The results schema: the arrays of a results message, in wire order within its body frame. This table is the
// one C++ statement of it; INFO publishes it as "results" (and "obs" for the observation arrays), and a test
// checks beast/envs/protocol.py's RESULT_FIELDS against that field by field.
enum class Field : uint8_t {
  kEnvIds, kRgb, kDepth, kEnemy, kAudio, kVars, kFinalVars,
  kReward, kDone, kTruncated, kCrashed, kEpisodeReturn, kEpisodeLength,
};
struct ResultField {
  Field id;
  const char* name;
  const char* dtype;               // numpy's name for the little-endian element type: uint8, int16, int32, float32
  std::size_t item_bytes;
  std::vector<std::size_t> shape;  // per env; empty for a scalar
  bool per_var;                    // one element per game variable: the shape is [G]
  std::size_t bytes_per_env(std::size_t num_vars) const;
  std::vector<std::size_t> env_shape(std::size_t num_vars) const;
};
const std::vector<ResultField>& result_fields();
const ResultField& result_field(Field id);
// `{"name": {"shape": [...], "dtype": "..."}, ...}` of the given fields (all of them if `names` is empty), in order.
std::string fields_json(std::size_t num_vars, const std::vector<std::string>& names = {});
constexpr std::size_t kResultAlign = 8;  // every array starts at a multiple of this offset in the body

// Builds a results message for n envs: allocates its body frame once and lets the caller fill env j's rows. The
// arrays lie back to back in result_fields() order, each [n, ...], each padded (with zeros) to kResultAlign bytes.
class ResultsWriter {
 public:
  ResultsWriter(MsgType type, uint32_t seq, std::size_t num_envs, std::size_t num_vars);
  // Env j's row of array `field`, for the caller to memcpy into.
  uint8_t* row(std::size_t field, std::size_t j) { return body_ + offsets_[field] + j * row_bytes_[field]; }
  std::size_t row_bytes(std::size_t field) const { return row_bytes_[field]; }
  // Hands the frames over (header, body); the writer is empty afterwards.
  std::vector<zmq::message_t> release();

 private:
  std::vector<std::size_t> row_bytes_, offsets_;
  std::vector<zmq::message_t> frames_;
  uint8_t* body_ = nullptr;
};

std::vector<zmq::message_t> make_error(uint32_t seq, ErrorCode code, const std::string& message);
std::vector<zmq::message_t> make_simple(MsgType type, uint32_t seq);
std::vector<zmq::message_t> make_info(uint32_t seq, const std::string& json);

// JSON string literal (with quotes) for the info document; escapes quotes, backslashes and control bytes.
std::string json_quote(const std::string& text);

}  // namespace beast::proto

#include "protocol.h"

#include <cstdio>
#include <cstring>
#include <unordered_set>

namespace beast::proto {
namespace {

// Explicit little-endian byte order so the format does not depend on the host (and matches Python's struct "<").
void put_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

std::vector<int32_t> read_i32_frame(const zmq::message_t& frame, std::size_t count, const char* what) {
  if (frame.size() != count * sizeof(int32_t)) {
    throw ProtocolError(ErrorCode::kBadFrames, std::string(what) + " frame has " + std::to_string(frame.size()) +
                                                   " bytes, expected " + std::to_string(count * 4) +
                                                   " (int32 x count=" + std::to_string(count) + ")");
  }
  std::vector<int32_t> out(count);
  const auto* p = static_cast<const uint8_t*>(frame.data());
  for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(get_u32(p + 4 * i));
  return out;
}

void expect_frames(const std::vector<zmq::message_t>& frames, std::size_t n, const char* type_name) {
  if (frames.size() != n) {
    throw ProtocolError(ErrorCode::kBadFrames, std::string(type_name) + " takes " + std::to_string(n) +
                                                   " frame(s) including the header, got " +
                                                   std::to_string(frames.size()));
  }
}

void check_actions(const std::vector<int32_t>& actions, int num_actions) {
  for (std::size_t i = 0; i < actions.size(); ++i) {
    if (actions[i] < 0 || actions[i] >= num_actions) {
      throw ProtocolError(ErrorCode::kBadAction, "action " + std::to_string(actions[i]) + " at position " +
                                                     std::to_string(i) + " is outside [0, " +
                                                     std::to_string(num_actions) + ")");
    }
  }
}

}  // namespace

void write_header(const Header& h, uint8_t* out) {
  put_u32(out + 0, h.magic);
  put_u16(out + 4, h.version);
  out[6] = static_cast<uint8_t>(h.type);
  out[7] = h.flags;
  put_u32(out + 8, h.count);
  put_u32(out + 12, h.seq);
  put_u32(out + 16, h.status);
  put_u32(out + 20, h.reserved);
}

zmq::message_t make_header(const Header& header) {
  zmq::message_t msg(kHeaderSize);
  write_header(header, static_cast<uint8_t*>(msg.data()));
  return msg;
}

uint32_t peek_seq(const zmq::message_t& frame) {
  if (frame.size() < 16) return 0;
  return get_u32(static_cast<const uint8_t*>(frame.data()) + 12);
}

Request parse_request(const std::vector<zmq::message_t>& frames, int num_envs, int num_actions) {
  if (frames.empty()) throw ProtocolError(ErrorCode::kMalformed, "empty message");
  const zmq::message_t& head = frames[0];
  if (head.size() != kHeaderSize) {
    throw ProtocolError(ErrorCode::kMalformed, "header frame must be " + std::to_string(kHeaderSize) +
                                                   " bytes, got " + std::to_string(head.size()));
  }
  const auto* p = static_cast<const uint8_t*>(head.data());
  const uint32_t magic = get_u32(p);
  if (magic != kMagic) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "bad magic 0x%08x, expected 0x%08x (\"BEST\")", magic, kMagic);
    throw ProtocolError(ErrorCode::kMalformed, buf);
  }
  const uint16_t version = get_u16(p + 4);
  if (version != kVersion) {
    throw ProtocolError(ErrorCode::kBadVersion, "protocol version " + std::to_string(version) +
                                                    ", this server speaks " + std::to_string(kVersion));
  }
  Request req;
  req.seq = get_u32(p + 12);
  const uint32_t count = get_u32(p + 8);
  const uint8_t type = p[6];
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello:
    case MsgType::kReset:
    case MsgType::kPing:
    case MsgType::kClose: {
      req.type = static_cast<MsgType>(type);
      expect_frames(frames, 1, "this request");
      if (count != 0) {
        throw ProtocolError(ErrorCode::kBadFrames, "count must be 0 for this request, got " + std::to_string(count));
      }
      return req;
    }
    case MsgType::kStep: {
      req.type = MsgType::kStep;
      expect_frames(frames, 2, "step");
      if (count != static_cast<uint32_t>(num_envs)) {
        throw ProtocolError(ErrorCode::kBadFrames, "step needs one action per env: count " + std::to_string(count) +
                                                       ", server has " + std::to_string(num_envs) + " envs");
      }
      req.actions = read_i32_frame(frames[1], count, "actions");
      check_actions(req.actions, num_actions);
      req.env_ids.resize(count);
      for (uint32_t i = 0; i < count; ++i) req.env_ids[i] = static_cast<int32_t>(i);
      return req;
    }
    case MsgType::kSend: {
      req.type = MsgType::kSend;
      expect_frames(frames, 3, "send");
      if (count == 0 || count > static_cast<uint32_t>(num_envs)) {
        throw ProtocolError(ErrorCode::kBadFrames, "send count must lie in [1, " + std::to_string(num_envs) +
                                                       "], got " + std::to_string(count));
      }
      req.env_ids = read_i32_frame(frames[1], count, "env_ids");
      req.actions = read_i32_frame(frames[2], count, "actions");
      std::unordered_set<int32_t> seen;
      for (int32_t id : req.env_ids) {
        if (id < 0 || id >= num_envs) {
          throw ProtocolError(ErrorCode::kBadEnvId, "env id " + std::to_string(id) + " is outside [0, " +
                                                        std::to_string(num_envs) + ")");
        }
        if (!seen.insert(id).second) {
          throw ProtocolError(ErrorCode::kBadEnvId, "env id " + std::to_string(id) + " appears twice");
        }
      }
      check_actions(req.actions, num_actions);
      return req;
    }
    default:
      break;
  }
  throw ProtocolError(ErrorCode::kMalformed, "unknown request type " + std::to_string(type));
}

const std::vector<ResultField>& result_fields() {
  static const std::vector<ResultField> fields = {
      {Field::kEnvIds, "env_ids", "int32", 4, {}, false},
      {Field::kRgb, "rgb", "uint8", 1, {3, kSide, kSide}, false},
      {Field::kDepth, "depth", "uint8", 1, {1, kSide, kSide}, false},
      {Field::kEnemy, "enemy", "uint8", 1, {1, kSide, kSide}, false},
      {Field::kAudio, "audio", "int16", 2, {kAudioChannels, kAudioSamples}, false},
      {Field::kVars, "vars", "float32", 4, {}, true},
      {Field::kFinalVars, "final_vars", "float32", 4, {}, true},
      {Field::kReward, "reward", "float32", 4, {}, false},
      {Field::kDone, "done", "uint8", 1, {}, false},
      {Field::kTruncated, "truncated", "uint8", 1, {}, false},
      {Field::kCrashed, "crashed", "uint8", 1, {}, false},
      {Field::kEpisodeReturn, "episode_return", "float32", 4, {}, false},
      {Field::kEpisodeLength, "episode_length", "int32", 4, {}, false},
  };
  return fields;
}

const ResultField& result_field(Field id) {
  for (const ResultField& rf : result_fields()) {
    if (rf.id == id) return rf;
  }
  throw std::logic_error("result field missing from result_fields()");
}

std::vector<std::size_t> ResultField::env_shape(std::size_t num_vars) const {
  return per_var ? std::vector<std::size_t>{num_vars} : shape;
}

std::size_t ResultField::bytes_per_env(std::size_t num_vars) const {
  std::size_t n = item_bytes;
  for (std::size_t d : env_shape(num_vars)) n *= d;
  return n;
}

std::string fields_json(std::size_t num_vars, const std::vector<std::string>& names) {
  std::string out = "{";
  bool first = true;
  auto emit = [&](const ResultField& rf) {
    out += (first ? "" : ",") + json_quote(rf.name) + ":{\"shape\":[";
    const std::vector<std::size_t> dims = rf.env_shape(num_vars);
    for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? "," : "") + std::to_string(dims[i]);
    out += "],\"dtype\":" + json_quote(rf.dtype) + "}";
    first = false;
  };
  if (names.empty()) {
    for (const ResultField& rf : result_fields()) emit(rf);
  } else {
    for (const std::string& name : names) {
      for (const ResultField& rf : result_fields()) {
        if (name == rf.name) emit(rf);
      }
    }
  }
  return out + "}";
}

ResultsWriter::ResultsWriter(MsgType type, uint32_t seq, std::size_t num_envs, std::size_t num_vars) {
  Header header;
  header.type = type;
  header.seq = seq;
  header.count = static_cast<uint32_t>(num_envs);
  std::size_t size = 0;
  for (const ResultField& rf : result_fields()) {
    row_bytes_.push_back(rf.bytes_per_env(num_vars));
    offsets_.push_back(size);
    size += (row_bytes_.back() * num_envs + kResultAlign - 1) / kResultAlign * kResultAlign;
  }
  frames_.reserve(2);
  frames_.push_back(make_header(header));
  frames_.emplace_back(size);
  body_ = static_cast<uint8_t*>(frames_[1].data());
  // Only the padding needs clearing; every row is written by the caller.
  for (std::size_t f = 0; f < offsets_.size(); ++f) {
    const std::size_t end = offsets_[f] + row_bytes_[f] * num_envs;
    const std::size_t next = f + 1 < offsets_.size() ? offsets_[f + 1] : size;
    std::memset(body_ + end, 0, next - end);
  }
}

std::vector<zmq::message_t> ResultsWriter::release() {
  body_ = nullptr;
  return std::move(frames_);
}

std::vector<zmq::message_t> make_error(uint32_t seq, ErrorCode code, const std::string& message) {
  Header h;
  h.type = MsgType::kError;
  h.seq = seq;
  h.status = static_cast<uint32_t>(code);
  std::vector<zmq::message_t> out;
  out.push_back(make_header(h));
  out.emplace_back(message.data(), message.size());
  return out;
}

std::vector<zmq::message_t> make_simple(MsgType type, uint32_t seq) {
  Header h;
  h.type = type;
  h.seq = seq;
  std::vector<zmq::message_t> out;
  out.push_back(make_header(h));
  return out;
}

std::vector<zmq::message_t> make_info(uint32_t seq, const std::string& json) {
  std::vector<zmq::message_t> out = make_simple(MsgType::kInfo, seq);
  out.emplace_back(json.data(), json.size());
  return out;
}

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace beast::proto

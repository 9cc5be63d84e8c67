#include "runtime/models/t5_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/file_io.h"

namespace skv {

namespace {

const std::string kMeta = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary

// Decodes the code point at s[i] (well-formed UTF-8 assumed: check_utf8 ran first); sets `len`.
uint32_t decode_at(const std::string& s, size_t i, size_t* len) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) { *len = 1; return c; }
  if ((c >> 5) == 6) { *len = 2; return ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu); }
  if ((c >> 4) == 14) {
    *len = 3;
    return ((c & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
           (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
  }
  *len = 4;
  return ((c & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
         ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
}

// Rust's char::is_whitespace (what the tokenizers library strips and splits on).
bool is_ws(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Characters that extend the grapheme before them (a subset of Unicode's Grapheme_Cluster_Break=Extend,
// ZWJ and SpacingMark: combining marks, variation selectors, emoji modifiers). Hangul jamo sequences and
// Indic conjuncts are not joined (documented in README: their normalisation may differ).
bool is_extend(uint32_t c) {
  return (c >= 0x0300 && c <= 0x036F) || (c >= 0x0483 && c <= 0x0489) || (c >= 0x0591 && c <= 0x05BD) ||
         (c >= 0x0610 && c <= 0x061A) || (c >= 0x064B && c <= 0x065F) || (c >= 0x0900 && c <= 0x0903) ||
         (c >= 0x093A && c <= 0x094F) || (c >= 0x1AB0 && c <= 0x1AFF) || (c >= 0x1DC0 && c <= 0x1DFF) ||
         c == 0x200C || c == 0x200D || (c >= 0x20D0 && c <= 0x20FF) || (c >= 0x3099 && c <= 0x309A) ||
         (c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xFE20 && c <= 0xFE2F) || (c >= 0x1F3FB && c <= 0x1F3FF) ||
         (c >= 0xE0020 && c <= 0xE007F) || (c >= 0xE0100 && c <= 0xE01EF);
}

// Grapheme_Cluster_Break=Control (UAX #29): Cc but CR/LF, line/paragraph separators, and the format characters
// that are not ZWNJ/ZWJ or prepended concatenation marks.
bool is_control(uint32_t c) {
  return (c < 0x20 && c != 0x0D && c != 0x0A) || (c >= 0x7F && c <= 0x9F) || c == 0xAD || c == 0x061C || c == 0x180E ||
         c == 0x200B || c == 0x200E || c == 0x200F || c == 0x2028 || c == 0x2029 || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2060 && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF0 && c <= 0xFFFB) || (c >= 0x13430 && c <= 0x1343F) ||
         (c >= 0x1BCA0 && c <= 0x1BCA3) || (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0000 || c == 0xE0001 ||
         (c >= 0xE0002 && c <= 0xE001F) || (c >= 0xE0080 && c <= 0xE00FF) || (c >= 0xE01F0 && c <= 0xE0FFF);
}

// Extended_Pictographic (approximately: the emoji blocks and the older symbols emoji use).
bool is_pictographic(uint32_t c) {
  return c == 0xA9 || c == 0xAE || c == 0x203C || c == 0x2049 || c == 0x2122 || c == 0x2139 ||
         (c >= 0x2194 && c <= 0x21AA) || (c >= 0x231A && c <= 0x23FF) || c == 0x24C2 || (c >= 0x25AA && c <= 0x25FE) ||
         (c >= 0x2600 && c <= 0x27BF) || (c >= 0x2934 && c <= 0x2935) || (c >= 0x2B05 && c <= 0x2B55) || c == 0x3030 ||
         c == 0x303D || c == 0x3297 || c == 0x3299 ||
         (c >= 0x1F000 && c <= 0x1FAFF && !(c >= 0x1F1E6 && c <= 0x1F1FF) && !(c >= 0x1F3FB && c <= 0x1F3FF)) ||
         (c >= 0x1FC00 && c <= 0x1FFFD);
}

// Byte lengths of the graphemes of s: UAX #29 extended grapheme clusters for the rules that matter here
// (GB3-GB5: CR LF, breaks around controls; GB9: Extend and ZWJ join; GB11: emoji ZWJ sequences; GB12/13:
// regional-indicator pairs). SpacingMark, Prepend and Hangul syllable rules are not applied.
std::vector<size_t> graphemes(const std::string& s) {
  std::vector<size_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    const uint32_t c = decode_at(s, i, &len);
    size_t j = i + len;
    if (c == 0x0D && j < s.size() && s[j] == '\n') {
      out.push_back(2);
      i += 2;
      continue;
    }
    if (c == 0x0D || c == 0x0A || is_control(c)) {  // GB4: a break after every control
      out.push_back(len);
      i = j;
      continue;
    }
    const bool ri = c >= 0x1F1E6 && c <= 0x1F1FF;
    const bool pict = is_pictographic(c);
    bool ri_paired = false;
    while (j < s.size()) {
      size_t l2 = 0;
      const uint32_t d = decode_at(s, j, &l2);
      if (is_extend(d) && !is_control(d)) {
        j += l2;
        if (d == 0x200D && pict && j < s.size()) {  // GB11: pictograph Extend* ZWJ x pictograph
          size_t l3 = 0;
          if (is_pictographic(decode_at(s, j, &l3))) j += l3;
        }
      } else if (ri && !ri_paired && d >= 0x1F1E6 && d <= 0x1F1FF) {
        ri_paired = true;
        j += l2;
      } else {
        break;
      }
    }
    out.push_back(j - i);
    i = j;
  }
  return out;
}

// A minimal protobuf reader: the fields of one message, for spiece.model's normalizer_spec.
struct ProtoField {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};

bool read_varint(std::string_view& s, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !s.empty(); shift += 7) {
    const auto b = static_cast<unsigned char>(s.front());
    s.remove_prefix(1);
    *v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

std::vector<ProtoField> proto_fields(std::string_view s, const std::string& what) {
  std::vector<ProtoField> out;
  while (!s.empty()) {
    uint64_t key = 0;
    SKV_CHECK(read_varint(s, &key), "{}: not a SentencePiece model (bad protobuf)", what);
    ProtoField f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<uint32_t>(key & 7);
    if (f.wire == 0) {
      SKV_CHECK(read_varint(s, &f.varint), "{}: not a SentencePiece model (bad protobuf)", what);
    } else if (f.wire == 2) {
      uint64_t n = 0;
      SKV_CHECK(read_varint(s, &n) && n <= s.size(), "{}: not a SentencePiece model (bad protobuf)", what);
      f.bytes = s.substr(0, n);
      s.remove_prefix(n);
    } else if (f.wire == 1 || f.wire == 5) {
      const size_t n = f.wire == 1 ? 8 : 4;
      SKV_CHECK(s.size() >= n, "{}: not a SentencePiece model (bad protobuf)", what);
      s.remove_prefix(n);
    } else {
      SKV_CHECK(false, "{}: not a SentencePiece model (protobuf wire type {})", what, f.wire);
    }
    out.push_back(f);
  }
  return out;
}

std::string path_in(const std::string& dir, const char* name) { return (std::filesystem::path(dir) / name).string(); }

}  // namespace

void check_utf8(const std::string& s, const std::string& what) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) n = 1, cp = c;
    else if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
    SKV_CHECK(n > 0 && i + n <= s.size(), "{}: not valid UTF-8 (byte {} is 0x{:02x})", what, i, c);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      SKV_CHECK((d & 0xC0) == 0x80, "{}: not valid UTF-8 (byte {} is 0x{:02x}, not followed by {} continuation "
                "bytes)", what, i, c, n - 1);
      cp = (cp << 6) | (d & 0x3F);
    }
    const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    SKV_CHECK(!overlong && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF),
              "{}: not valid UTF-8 (byte {}: an overlong form, a surrogate or a code point above U+10FFFF)", what, i);
    i += n;
  }
}

T5Tokenizer::T5Tokenizer(const std::string& dir) : dir_(dir), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const std::string model_path = path_in(dir, "spiece.model");
  const std::string model = read_input_file(model_path, 64ull << 20);
  const auto st = sp_->LoadFromSerializedProto(model);
  SKV_CHECK(st.ok(), "{}: not a SentencePiece model ({})", model_path, st.ToString());
  // normalizer_spec (field 3) -> precompiled_charsmap (field 2), add_dummy_prefix (field 3, default true).
  bool dummy_prefix = true;
  for (const auto& f : proto_fields(model, model_path)) {
    if (f.number != 3 || f.wire != 2) continue;
    for (const auto& g : proto_fields(f.bytes, model_path)) {
      if (g.number == 2 && g.wire == 2) charsmap_.assign(g.bytes);
      if (g.number == 3 && g.wire == 0) dummy_prefix = g.varint != 0;
    }
  }
  SKV_CHECK(dummy_prefix, "{}: normalizer_spec.add_dummy_prefix is false; T5 tokenizers prepend U+2581 (this "
            "pipeline is not supported)", model_path);
  if (!charsmap_.empty()) {
    SKV_CHECK(charsmap_.size() >= 4, "{}: precompiled_charsmap is truncated", model_path);
    uint32_t trie_bytes = 0;
    std::memcpy(&trie_bytes, charsmap_.data(), 4);
    SKV_CHECK(trie_bytes % 4 == 0 && trie_bytes >= 4 && 4 + static_cast<size_t>(trie_bytes) <= charsmap_.size(),
              "{}: precompiled_charsmap is malformed (trie of {} bytes in {})", model_path, trie_bytes, charsmap_.size());
    trie_ = reinterpret_cast<const uint32_t*>(charsmap_.data() + 4);  // std::string storage is suitably aligned
    trie_units_ = trie_bytes / 4;
    norm_blob_ = charsmap_.data() + 4 + trie_bytes;
    norm_size_ = charsmap_.size() - 4 - trie_bytes;
  }
  const int n_pieces = sp_->GetPieceSize();
  // The Unigram vocabulary: every piece of spiece.model (as the tokenizers library's Unigram holds them).
  scores_.resize(static_cast<size_t>(n_pieces));
  min_score_ = 0;
  for (int i = 0; i < n_pieces; ++i) {
    const std::string& p = sp_->IdToPiece(i);
    scores_[static_cast<size_t>(i)] = sp_->GetScore(i);
    min_score_ = std::min(min_score_, static_cast<double>(scores_[static_cast<size_t>(i)]));
    piece_text_.push_back(p);
  }
  for (int i = 0; i < n_pieces; ++i) {
    pieces_.emplace(std::string_view(piece_text_[static_cast<size_t>(i)]), i);
    max_piece_ = std::max(max_piece_, piece_text_[static_cast<size_t>(i)].size());
  }
  unk_id_ = sp_->unk_id();
  eos_id_ = sp_->PieceToId("</s>");
  pad_id_ = sp_->PieceToId("<pad>");
  SKV_CHECK(eos_id_ != unk_id_ && pad_id_ != unk_id_, "{}: the vocabulary has no '</s>' or '<pad>' piece (not a T5 "
            "SentencePiece model)", model_path);
  vocab_size_ = n_pieces;

  const std::string tj_path = path_in(dir, "tokenizer.json");
  if (std::filesystem::exists(tj_path)) {
    nlohmann::json tj;
    try {
      tj = nlohmann::json::parse(read_input_file(tj_path));
    } catch (const nlohmann::json::exception& e) {
      SKV_CHECK(false, "{}: not valid JSON ({})", tj_path, e.what());
    }
    try {
      for (const auto& a : tj.at("added_tokens")) {
        Added t{a.at("content").get<std::string>(), a.at("id").get<int64_t>(), a.value("lstrip", false),
                a.value("rstrip", false)};
        SKV_CHECK(!t.content.empty() && t.id >= 0, "{}: added token '{}' (id {}) is invalid", tj_path, t.content, t.id);
        added_.push_back(t);
      }
      const auto& model_j = tj.at("model");
      SKV_CHECK(model_j.value("type", "") == "Unigram", "{}: model.type is '{}', a T5 tokenizer is 'Unigram'", tj_path,
                model_j.value("type", ""));
      // model.vocab is spiece.model's pieces, then (transformers' conversion) the extra ids.
      SKV_CHECK(model_j.at("vocab").size() >= static_cast<size_t>(n_pieces), "{}: model.vocab has {} pieces but {} has {} "
                "(they do not belong together)", tj_path, model_j.at("vocab").size(), model_path, n_pieces);
      // Normaliser: Precompiled, optionally followed by Replace(" {2,}", " ") and Strip.
      collapse_spaces_ = false;
      const auto& nj = tj.at("normalizer");
      std::vector<nlohmann::json> steps;
      if (!nj.is_null()) {
        if (nj.value("type", "") == "Sequence") {
          for (const auto& s : nj.at("normalizers")) steps.push_back(s);
        } else {
          steps.push_back(nj);
        }
      }
      for (const auto& s : steps) {
        const std::string ty = s.value("type", "");
        if (ty == "Precompiled") continue;  // the same charsmap as spiece.model's
        if (ty == "Replace" && s.at("pattern").value("Regex", "") == " {2,}" && s.value("content", "") == " ") {
          collapse_spaces_ = true;
        } else if (ty == "Strip") {
          strip_left_ = s.value("left", false);
          strip_right_ = s.value("right", false);
        } else {
          SKV_CHECK(false, "{}: normalizer step '{}' is not one a T5 tokenizer uses (Precompiled, Replace(\" {{2,}}\"), "
                    "Strip)", tj_path, s.dump());
        }
      }
      // Pre-tokeniser: Metaspace, or Sequence[WhitespaceSplit, Metaspace].
      const auto& pj = tj.at("pre_tokenizer");
      nlohmann::json meta = pj;
      if (pj.value("type", "") == "Sequence") {
        const auto& ps = pj.at("pretokenizers");
        SKV_CHECK(ps.size() == 2 && ps[0].value("type", "") == "WhitespaceSplit", "{}: pre_tokenizer {} is not one a T5 "
                  "tokenizer uses", tj_path, pj.dump());
        whitespace_split_ = true;
        meta = ps[1];
      }
      SKV_CHECK(meta.value("type", "") == "Metaspace" && meta.value("replacement", "") == kMeta &&
                    meta.value("add_prefix_space", true),
                "{}: pre_tokenizer {} is not one a T5 tokenizer uses (Metaspace with U+2581 and a prefix space)", tj_path,
                meta.dump());
      prepend_ = meta.value("prepend_scheme", "always");
      SKV_CHECK(prepend_ == "always", "{}: Metaspace prepend_scheme '{}' is not supported (Infinity loads T5 with "
                "legacy=True: 'always')", tj_path, prepend_);
    } catch (const nlohmann::json::exception& e) {
      SKV_CHECK(false, "{}: not a tokenizer.json of a T5 tokenizer ({})", tj_path, e.what());
    }
  } else {
    // What transformers 4.36 builds from spiece.model alone: <pad> </s> <unk> plus the extra ids,
    // <extra_id_i> = pieces + extra_ids - 1 - i, which take the whitespace around them.
    int extra = 100;
    const std::string tc_path = path_in(dir, "tokenizer_config.json");
    if (std::filesystem::exists(tc_path)) {
      try {
        extra = nlohmann::json::parse(read_input_file(tc_path)).value("extra_ids", 100);
      } catch (const nlohmann::json::exception& e) {
        SKV_CHECK(false, "{}: not valid JSON ({})", tc_path, e.what());
      }
    }
    added_.push_back({"<pad>", pad_id_, false, false});
    added_.push_back({"</s>", eos_id_, false, false});
    added_.push_back({"<unk>", unk_id_, false, false});
    for (int i = 0; i < extra; ++i) added_.push_back({fmt::format("<extra_id_{}>", i), n_pieces + extra - 1 - i, true, true});
  }
  for (const auto& a : added_) vocab_size_ = std::max(vocab_size_, a.id + 1);
}

T5Tokenizer::~T5Tokenizer() = default;

// darts-clone's commonPrefixSearch over the charsmap trie, first (shortest) match only: what the
// `Precompiled` normaliser of the tokenizers library (spm_precompiled::transform) uses.
const char* T5Tokenizer::charsmap_lookup(const unsigned char* s, size_t n) const {
  if (!trie_) return nullptr;
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); };
  auto label = [](uint32_t u) { return u & ((1u << 31) | 0xFFu); };
  auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1u) != 0; };
  size_t pos = 0;
  uint32_t unit = trie_[0];
  pos ^= offset(unit);
  for (size_t i = 0; i < n; ++i) {
    pos ^= s[i];
    if (pos >= trie_units_) return nullptr;
    unit = trie_[pos];
    if (label(unit) != s[i]) return nullptr;
    pos ^= offset(unit);
    if (pos >= trie_units_) return nullptr;
    if (has_leaf(unit)) {
      const uint32_t v = trie_[pos] & ((1u << 31) - 1);
      return v < norm_size_ ? norm_blob_ + v : nullptr;
    }
  }
  return nullptr;
}

std::string T5Tokenizer::precompiled_normalize(const std::string& text) const {
  if (!trie_) return text;
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (size_t g : graphemes(text)) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data() + at);
    const char* norm = g < 6 ? charsmap_lookup(p, g) : nullptr;
    if (norm) {
      out += norm;
    } else {
      for (size_t k = 0; k < g;) {
        size_t len = 0;
        decode_at(text, at + k, &len);
        const char* n1 = charsmap_lookup(p + k, len);
        if (n1) out += n1;
        else out.append(text, at + k, len);
        k += len;
      }
    }
    at += g;
  }
  return out;
}

// The Unigram model of the tokenizers library (Unigram::encode_optimized) on one normalised word: Viterbi over
// the pieces (scores from spiece.model), shorter pieces first and a later one only when strictly better; a
// character no piece starts with is <unk> at min score - 10; consecutive <unk> characters fuse into one token.
// (SentencePiece's own Encode would normalise the word a second time, which changes combining sequences.)
void T5Tokenizer::unigram(const std::string& w, std::vector<int64_t>& out) const {
  const size_t n = w.size();
  struct Node {
    double score = 0;
    int64_t start = -1;
    int64_t id = -1;
  };
  std::vector<Node> best(n + 1);
  best[0].start = 0;
  const double unk_score = min_score_ - 10.0;
  for (size_t at = 0; at < n;) {
    size_t mblen = 0;
    decode_at(w, at, &mblen);
    const double here = best[at].score;
    bool single = false;
    for (size_t len = 1; len <= max_piece_ && at + len <= n; ++len) {
      const auto it = pieces_.find(std::string_view(w).substr(at, len));
      if (it == pieces_.end()) continue;
      Node& t = best[at + len];
      const double cand = here + scores_[static_cast<size_t>(it->second)];
      if (t.start < 0 || cand > t.score) t = {cand, static_cast<int64_t>(at), it->second};
      single = single || len == mblen;
    }
    if (!single) {
      Node& t = best[at + mblen];
      const double cand = here + unk_score;
      if (t.start < 0 || cand > t.score) t = {cand, static_cast<int64_t>(at), unk_id_};
    }
    at += mblen;
  }
  std::vector<int64_t> ids;
  std::vector<std::string> unk_parts;
  auto flush = [&] {
    if (unk_parts.empty()) return;
    std::string fused;
    for (auto p = unk_parts.rbegin(); p != unk_parts.rend(); ++p) fused += *p;
    const auto it = pieces_.find(std::string_view(fused));
    ids.push_back(it != pieces_.end() ? it->second : unk_id_);
    unk_parts.clear();
  };
  for (size_t e = n; e > 0;) {
    const Node& node = best[e];
    SKV_CHECK(node.start >= 0, "internal: T5 Unigram lattice has no path to byte {} of '{}'", e, w);
    if (node.id == unk_id_) {
      unk_parts.push_back(w.substr(static_cast<size_t>(node.start), e - static_cast<size_t>(node.start)));
    } else {
      flush();
      ids.push_back(node.id);
    }
    e = static_cast<size_t>(node.start);
  }
  flush();
  out.insert(out.end(), ids.rbegin(), ids.rend());
}

void T5Tokenizer::encode_segment(const std::string& seg, std::vector<int64_t>& out) const {
  std::string n = precompiled_normalize(seg);
  if (collapse_spaces_) {
    std::string c;
    c.reserve(n.size());
    for (size_t i = 0; i < n.size();) {
      if (n[i] == ' ') {
        size_t j = i;
        while (j < n.size() && n[j] == ' ') ++j;
        c += ' ';
        i = j;
      } else {
        c += n[i++];
      }
    }
    n.swap(c);
  }
  if (strip_left_ || strip_right_) {
    size_t b = 0, e = n.size();
    if (strip_left_) {
      size_t len = 0;
      while (b < e && is_ws(decode_at(n, b, &len))) b += len;
    }
    if (strip_right_) {
      while (e > b) {  // back up to the start of the last code point
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>(n[s]) & 0xC0) == 0x80) --s;
        size_t len = 0;
        if (!is_ws(decode_at(n, s, &len))) break;
        e = s;
      }
    }
    n = n.substr(b, e - b);
  }
  std::vector<std::string> pieces;
  if (whitespace_split_) {
    size_t i = 0;
    std::string cur;
    while (i < n.size()) {
      size_t len = 0;
      const uint32_t c = decode_at(n, i, &len);
      if (is_ws(c)) {
        if (!cur.empty()) pieces.push_back(std::move(cur));
        cur.clear();
      } else {
        cur.append(n, i, len);
      }
      i += len;
    }
    if (!cur.empty()) pieces.push_back(std::move(cur));
  } else {
    pieces.push_back(n);
  }
  for (const std::string& p : pieces) {
    if (p.empty()) continue;  // NormalizedString::prepend does nothing to an empty string
    std::string m;
    for (char ch : p) {
      if (ch == ' ') m += kMeta;
      else m += ch;
    }
    if (m.compare(0, kMeta.size(), kMeta) != 0) m = kMeta + m;
    // Split before every U+2581 (MergedWithNext).
    size_t start = 0;
    while (start < m.size()) {
      size_t next = m.find(kMeta, start + kMeta.size());
      if (next == std::string::npos) next = m.size();
      unigram(m.substr(start, next - start), out);
      start = next;
    }
  }
}

std::vector<int64_t> T5Tokenizer::encode(const std::string& text, int max_length, const std::string& what) const {
  check_utf8(text, what);
  SKV_CHECK(max_length >= 1, "T5 max_length {} must be at least 1", max_length);
  std::vector<int64_t> ids;
  // Special tokens, leftmost-longest, each widened over the whitespace its lstrip/rstrip allow.
  size_t seg_start = 0, i = 0;
  while (i < text.size()) {
    const Added* best = nullptr;
    for (const auto& a : added_)
      if (text.compare(i, a.content.size(), a.content) == 0 && (!best || a.content.size() > best->content.size())) best = &a;
    if (!best) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + best->content.size();
    if (best->lstrip) {
      while (start > seg_start) {
        size_t s = start - 1;
        while (s > seg_start && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t len = 0;
        if (!is_ws(decode_at(text, s, &len))) break;
        start = s;
      }
    }
    if (best->rstrip) {
      size_t len = 0;
      while (stop < text.size() && is_ws(decode_at(text, stop, &len))) stop += len;
    }
    if (start > seg_start) encode_segment(text.substr(seg_start, start - seg_start), ids);
    ids.push_back(best->id);
    seg_start = i = stop;
  }
  if (seg_start < text.size()) encode_segment(text.substr(seg_start), ids);
  if (static_cast<int64_t>(ids.size()) > max_length - 1) ids.resize(static_cast<size_t>(max_length - 1));
  ids.push_back(eos_id_);
  return ids;
}

}  // namespace skv

// t5_tokenizer.h - prompt text -> Flan-T5 token ids, exactly as Infinity's pipeline gets them:
// transformers' T5TokenizerFast (`AutoTokenizer.from_pretrained(dir, legacy=True)`), truncated to
// max_length tokens with `</s>` appended.
//
// The one design choice: plain SentencePiece (`spm.encode`) is *not* what the fast tokenizer does, so
// SentencePiece (libsentencepiece) only loads spiece.model (pieces, scores, ids); the steps are the fast
// tokenizer's, read from tokenizer.json (or, without it, the pipeline transformers 4.36 converts
// spiece.model to), and its Unigram search is ours (SentencePiece's would normalise each word again):
//   1. special tokens (`</s>`, `<pad>`, `<unk>`, `<extra_id_N>`) are cut out of the raw text first, each
//      with its lstrip/rstrip flags (the extra ids swallow the whitespace around them);
//   2. each piece between them is normalised with the model's precompiled charsmap grapheme by grapheme
//      (the `Precompiled` normaliser: NFKC, tabs/newlines to spaces, ...), then `Replace(" {2,}", " ")`;
//   3. Metaspace: spaces become U+2581, a U+2581 is prepended to every piece ("always" = legacy), and the
//      text is split before every U+2581; each word is one Unigram (Viterbi) search, unknown characters
//      fused into one <unk>.
// Differences from `spm.encode` this produces (tests/models/test_t5_tokenizer.cpp and the golden):
// trailing whitespace gives a lone U+2581 token, a text of only spaces gives U+2581, special tokens are
// single ids instead of spelled-out characters, text after a special token starts a new word.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace skv {

class T5Tokenizer {
 public:
  // `dir`: a Hugging Face T5 folder (spiece.model required; tokenizer.json, tokenizer_config.json used
  // when present).
  explicit T5Tokenizer(const std::string& dir);
  ~T5Tokenizer();
  T5Tokenizer(const T5Tokenizer&) = delete;
  T5Tokenizer& operator=(const T5Tokenizer&) = delete;

  // Ids of `text` with `</s>` appended, at most max_length of them (truncation keeps the first
  // max_length - 1 tokens, then `</s>`). `what` names the text in errors (non-UTF-8 input).
  std::vector<int64_t> encode(const std::string& text, int max_length = 512, const std::string& what = "prompt") const;
  int64_t vocab_size() const { return vocab_size_; }  // pieces + added tokens: ids are < this
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  const std::string& dir() const { return dir_; }

  // Exposed for tests: the normalised text of the `Precompiled` step alone.
  std::string precompiled_normalize(const std::string& text) const;

 private:
  struct Added {
    std::string content;
    int64_t id = 0;
    bool lstrip = false, rstrip = false;
  };
  void encode_segment(const std::string& seg, std::vector<int64_t>& out) const;
  void unigram(const std::string& word, std::vector<int64_t>& out) const;
  const char* charsmap_lookup(const unsigned char* s, size_t n) const;  // shortest-prefix match or null

  std::string dir_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<Added> added_;
  std::deque<std::string> piece_text_;  // stable storage for the keys of pieces_
  std::unordered_map<std::string_view, int64_t> pieces_;
  std::vector<float> scores_;
  double min_score_ = 0;
  size_t max_piece_ = 0;
  std::string charsmap_;  // spiece.model's normalizer_spec.precompiled_charsmap (may be empty)
  const uint32_t* trie_ = nullptr;
  size_t trie_units_ = 0;
  const char* norm_blob_ = nullptr;
  size_t norm_size_ = 0;
  // Pipeline flags from tokenizer.json.
  bool collapse_spaces_ = true;   // Replace(" {2,}", " ")
  bool strip_left_ = false, strip_right_ = false;
  bool whitespace_split_ = false; // pre-tokenizer Sequence[WhitespaceSplit, Metaspace]
  std::string prepend_ = "always";
  int64_t vocab_size_ = 0, eos_id_ = 1, pad_id_ = 0, unk_id_ = 2;
};

// Throws "<what>: not valid UTF-8 (byte N)" unless `s` is well-formed UTF-8.
void check_utf8(const std::string& s, const std::string& what);

}  // namespace skv

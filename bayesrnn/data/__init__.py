"""Corpora, vocabularies, token streams and downloads (no inference or model code)."""

from bayesrnn.data.checksums import (
    ChecksumError,
    DataError,
    DataNotFoundError,
    sha256_file,
    verify_sha256,
)
from bayesrnn.data.corpora import LanguageCorpus, load_ptb, load_text
from bayesrnn.data.download import DownloadError, download_file, download_polarity, download_ptb
from bayesrnn.data.embedded import embedded_split_text, load_embedded_corpus
from bayesrnn.data.fingerprint import (
    corpus_fingerprint,
    reencode_corpus,
    rescale_series,
    vocabulary_fingerprint,
)
from bayesrnn.data.polarity import (
    ClassificationCorpus,
    ClassificationSplit,
    classification_batches,
    load_polarity,
    pad_batch,
)
from bayesrnn.data.series import (
    SeriesCorpus,
    load_csv_series,
    load_statsmodels_series,
    split_series,
)
from bayesrnn.data.streams import batchify, check_token_ids, reverse_stream
from bayesrnn.data.tokenizers import TOKENIZERS, tokenize_text
from bayesrnn.data.vocab import EOS, PAD, UNK, Vocabulary

__all__ = [
    "EOS",
    "PAD",
    "TOKENIZERS",
    "UNK",
    "ChecksumError",
    "ClassificationCorpus",
    "ClassificationSplit",
    "DataError",
    "DataNotFoundError",
    "DownloadError",
    "LanguageCorpus",
    "SeriesCorpus",
    "Vocabulary",
    "batchify",
    "check_token_ids",
    "classification_batches",
    "corpus_fingerprint",
    "download_file",
    "download_polarity",
    "download_ptb",
    "embedded_split_text",
    "load_csv_series",
    "load_embedded_corpus",
    "load_polarity",
    "load_ptb",
    "load_statsmodels_series",
    "load_text",
    "pad_batch",
    "reencode_corpus",
    "rescale_series",
    "reverse_stream",
    "sha256_file",
    "split_series",
    "tokenize_text",
    "verify_sha256",
    "vocabulary_fingerprint",
]

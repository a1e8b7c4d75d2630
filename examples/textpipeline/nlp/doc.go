// Package nlp holds the real algorithms behind the textpipeline example: a
// multi-model text-understanding pipeline in which a document is
// preprocessed once, handed to one of several models chosen at run time,
// and the results are combined.
//
// The pieces are:
//
//   - [Preprocess]: Unicode normalisation (canonical composition of common
//     Latin accents, lower-casing, punctuation stripping, English contraction
//     expansion), sentence splitting, word tokenisation, English stop-word
//     removal and Porter stemming ([Stem]).
//   - [LanguageDetector]: a Cavnar–Trenkle character-trigram classifier using
//     the out-of-place rank distance, with profiles for English, French,
//     German and Spanish built from embedded sample text.
//   - [SentimentModel]: multinomial naive Bayes with Laplace smoothing and
//     negation marking, trained from an embedded labelled corpus.
//   - [KeywordExtractor]: TF-IDF keyword extraction against an inverse
//     document frequency table computed from the embedded corpora.
//   - [Summarize]: extractive TextRank summarisation (cosine similarity of
//     sentence term vectors, weighted PageRank by power iteration).
//
// [NewModels] builds every trained model once from the embedded data and
// returns them together in a [Models].
//
// # Concurrency
//
// The package has no mutable package-level state and no init side effects.
// [Preprocess], [Stem] and [Summarize] are pure functions. A [Models],
// [LanguageDetector], [SentimentModel] or [KeywordExtractor] is immutable
// once its constructor returns, so all of their methods are safe for
// concurrent use by any number of goroutines without further
// synchronisation. No function in this package modifies a [Doc] it is
// given, so one Doc may also be shared between goroutines, provided the
// caller does not modify it either.
//
// Every function is deterministic: the same input always gives the same
// output, ties being broken by a fixed order (original position or
// lexicographic order).
package nlp

package nlp

// IsStopWord reports whether w, a lower-case normalised word as produced by
// [Preprocess], is an English stop word.
//
// The list is a conventional English function-word list with one deliberate
// omission: the negators "no", "nor", "not" and "never" are not stop words,
// because they carry meaning the sentiment model relies on. Contractions
// need no entries of their own: [Preprocess] expands "n't" into "not" and
// drops the clitics 's, 're, 've, 'll, 'd and 'm.
//
// The list is a switch rather than a map so that the package holds no
// package-level variables; the compiler turns it into a binary search.
func IsStopWord(w string) bool {
	switch w {
	case "a", "about", "above", "after", "again", "against", "all", "almost",
		"along", "already", "also", "although", "am", "among", "an", "and",
		"another", "any", "anyone", "anything", "are", "around", "as", "at",
		"be", "became", "because", "become", "been", "before", "being",
		"below", "between", "both", "but", "by",
		"can", "could",
		"did", "do", "does", "doing", "done", "down", "during",
		"each", "either", "else", "enough", "etc", "even", "ever", "every",
		"for", "from", "further",
		"had", "has", "have", "having", "he", "her", "here", "hers",
		"herself", "him", "himself", "his", "how", "however",
		"i", "if", "in", "into", "is", "it", "its", "itself",
		"just",
		"let",
		"may", "me", "might", "more", "most", "much", "must", "my", "myself",
		"of", "off", "often", "on", "once", "one", "only", "onto", "or",
		"other", "others", "ought", "our", "ours", "ourselves", "out", "over",
		"own",
		"per",
		"quite",
		"rather",
		"same", "shall", "she", "should", "since", "so", "some", "something",
		"still", "such",
		"than", "that", "the", "their", "theirs", "them", "themselves",
		"then", "there", "therefore", "these", "they", "this", "those",
		"though", "through", "thus", "to", "too",
		"under", "until", "up", "upon", "us",
		"very", "via",
		"was", "we", "were", "what", "whatever", "when", "whenever", "where",
		"whereas", "wherever", "whether", "which", "while", "who", "whoever",
		"whom", "whose", "why", "will", "with", "within", "would",
		"yet", "you", "your", "yours", "yourself", "yourselves":
		return true
	}
	return false
}

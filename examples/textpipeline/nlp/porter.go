package nlp

// Stem returns the Porter stem of an English word.
//
// It implements the complete Porter (1980) algorithm, steps 1a to 5b, as in
// Martin Porter's reference implementation, including its two documented
// departures from the paper (step 2 maps "bli" to "ble" instead of "abli" to
// "able", and adds "logi" to "log"). Its output therefore matches the
// reference vocabulary output, e.g. "generalizations" → "gener",
// "hopping" → "hop", "ponies" → "poni".
//
// The stemmer is defined for lower-case ASCII letters only: words containing
// any other byte (upper case, digits, accented letters) and words of at most
// two letters are returned unchanged.
func Stem(word string) string {
	if len(word) <= 2 {
		return word
	}
	for i := 0; i < len(word); i++ {
		if word[i] < 'a' || word[i] > 'z' {
			return word
		}
	}
	s := porterStemmer{b: []byte(word), k: len(word) - 1}
	s.step1ab()
	if s.k > 0 {
		s.step1c()
		s.step2()
		s.step3()
		s.step4()
		s.step5()
	}
	stem := s.b[:s.k+1]
	if len(stem) <= len(word) && string(stem) == word[:len(stem)] {
		return word[:len(stem)] // a prefix of word: no allocation
	}
	return string(stem)
}

// porterStemmer holds the word being stemmed: b[0..k] is the current word
// and j marks the end of the stem found by the last successful ends call.
type porterStemmer struct {
	b    []byte
	k, j int
}

// cons reports whether b[i] is a consonant. 'y' is a consonant at the start
// of a word or after a vowel, and a vowel after a consonant.
func (s *porterStemmer) cons(i int) bool {
	switch s.b[i] {
	case 'a', 'e', 'i', 'o', 'u':
		return false
	case 'y':
		if i == 0 {
			return true
		}
		return !s.cons(i - 1)
	}
	return true
}

// m returns the measure of b[0..j]: the number of VC sequences in the form
// [C](VC)^m[V].
func (s *porterStemmer) m() int {
	n := 0
	i := s.next(0, false)
	for i >= 0 {
		if i = s.next(i+1, true); i < 0 {
			return n
		}
		n++
		i = s.next(i+1, false)
	}
	return n
}

// next returns the index of the first consonant (cons) or vowel (!cons)
// in b[i..j], or -1 if there is none.
func (s *porterStemmer) next(i int, cons bool) int {
	for ; i <= s.j; i++ {
		if s.cons(i) == cons {
			return i
		}
	}
	return -1
}

// vowelInStem reports whether b[0..j] contains a vowel.
func (s *porterStemmer) vowelInStem() bool {
	for i := 0; i <= s.j; i++ {
		if !s.cons(i) {
			return true
		}
	}
	return false
}

// doubleC reports whether b[i-1..i] is a double consonant.
func (s *porterStemmer) doubleC(i int) bool {
	if i < 1 || s.b[i] != s.b[i-1] {
		return false
	}
	return s.cons(i)
}

// cvc reports whether b[i-2..i] is consonant-vowel-consonant with the last
// consonant not w, x or y (the *o condition of the paper).
func (s *porterStemmer) cvc(i int) bool {
	if i < 2 || !s.cons(i) || s.cons(i-1) || !s.cons(i-2) {
		return false
	}
	switch s.b[i] {
	case 'w', 'x', 'y':
		return false
	}
	return true
}

// ends reports whether b[0..k] ends with suffix and, if so, sets j to the
// index just before the suffix.
func (s *porterStemmer) ends(suffix string) bool {
	l := len(suffix)
	if l > s.k+1 {
		return false
	}
	if string(s.b[s.k-l+1:s.k+1]) != suffix {
		return false
	}
	s.j = s.k - l
	return true
}

// setTo replaces b[j+1..k] with r and adjusts k.
func (s *porterStemmer) setTo(r string) {
	s.b = append(s.b[:s.j+1], r...)
	s.k = s.j + len(r)
}

// r replaces the suffix with rep when the measure of the stem is positive.
func (s *porterStemmer) r(rep string) {
	if s.m() > 0 {
		s.setTo(rep)
	}
}

// step1ab removes plurals and -ed or -ing.
func (s *porterStemmer) step1ab() {
	if s.b[s.k] == 's' {
		switch {
		case s.ends("sses"):
			s.k -= 2
		case s.ends("ies"):
			s.setTo("i")
		case s.b[s.k-1] != 's':
			s.k--
		}
	}
	if s.ends("eed") {
		if s.m() > 0 {
			s.k--
		}
		return
	}
	if (s.ends("ed") || s.ends("ing")) && s.vowelInStem() {
		s.k = s.j
		switch {
		case s.ends("at"):
			s.setTo("ate")
		case s.ends("bl"):
			s.setTo("ble")
		case s.ends("iz"):
			s.setTo("ize")
		case s.doubleC(s.k):
			switch s.b[s.k] {
			case 'l', 's', 'z':
			default:
				s.k--
			}
		case s.m() == 1 && s.cvc(s.k):
			s.setTo("e")
		}
	}
}

// step1c turns a terminal y into i when there is another vowel in the stem.
func (s *porterStemmer) step1c() {
	if s.ends("y") && s.vowelInStem() {
		s.b[s.k] = 'i'
	}
}

// replaceFirst applies the first rule whose suffix matches, replacing it
// through r (that is, only when m() > 0). Once a suffix matches no later
// rule is tried, whether or not the replacement happened.
func (s *porterStemmer) replaceFirst(rules ...string) {
	for i := 0; i+1 < len(rules); i += 2 {
		if s.ends(rules[i]) {
			s.r(rules[i+1])
			return
		}
	}
}

// step2 maps double suffixes to single ones, e.g. -ization to -ize.
func (s *porterStemmer) step2() {
	switch s.b[s.k-1] {
	case 'a':
		s.replaceFirst("ational", "ate", "tional", "tion")
	case 'c':
		s.replaceFirst("enci", "ence", "anci", "ance")
	case 'e':
		s.replaceFirst("izer", "ize")
	case 'l':
		s.replaceFirst("bli", "ble", "alli", "al", "entli", "ent", "eli", "e", "ousli", "ous")
	case 'o':
		s.replaceFirst("ization", "ize", "ation", "ate", "ator", "ate")
	case 's':
		s.replaceFirst("alism", "al", "iveness", "ive", "fulness", "ful", "ousness", "ous")
	case 't':
		s.replaceFirst("aliti", "al", "iviti", "ive", "biliti", "ble")
	case 'g':
		s.replaceFirst("logi", "log")
	}
}

// step3 deals with -ic-, -full, -ness and similar.
func (s *porterStemmer) step3() {
	switch s.b[s.k] {
	case 'e':
		s.replaceFirst("icate", "ic", "ative", "", "alize", "al")
	case 'i':
		s.replaceFirst("iciti", "ic")
	case 'l':
		s.replaceFirst("ical", "ic", "ful", "")
	case 's':
		s.replaceFirst("ness", "")
	}
}

// step4 removes -ant, -ence and similar when the measure of the stem is
// greater than one.
func (s *porterStemmer) step4() {
	matched := false
	switch s.b[s.k-1] {
	case 'a':
		matched = s.ends("al")
	case 'c':
		matched = s.ends("ance") || s.ends("ence")
	case 'e':
		matched = s.ends("er")
	case 'i':
		matched = s.ends("ic")
	case 'l':
		matched = s.ends("able") || s.ends("ible")
	case 'n':
		matched = s.ends("ant") || s.ends("ement") || s.ends("ment") || s.ends("ent")
	case 'o':
		matched = (s.ends("ion") && s.j >= 0 && (s.b[s.j] == 's' || s.b[s.j] == 't')) || s.ends("ou")
	case 's':
		matched = s.ends("ism")
	case 't':
		matched = s.ends("ate") || s.ends("iti")
	case 'u':
		matched = s.ends("ous")
	case 'v':
		matched = s.ends("ive")
	case 'z':
		matched = s.ends("ize")
	}
	if matched && s.m() > 1 {
		s.k = s.j
	}
}

// step5 removes a final -e when the measure is greater than one (or equal to
// one and the stem does not end cvc) and reduces a final -ll to -l when the
// measure is greater than one.
func (s *porterStemmer) step5() {
	s.j = s.k
	if s.b[s.k] == 'e' {
		a := s.m()
		if a > 1 || (a == 1 && !s.cvc(s.k-1)) {
			s.k--
		}
	}
	if s.b[s.k] == 'l' && s.doubleC(s.k) && s.m() > 1 {
		s.k--
	}
}

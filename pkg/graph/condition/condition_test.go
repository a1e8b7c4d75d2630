package condition

import (
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	data := []byte(`{"language":"en","score":0.72,"label":"positive","text":"What is JetStream?",
		"tags":["question","short"],"n":3,"nested":{"a":{"b":[10,20,{"c":"deep"}]}},"odd key":"x",
		"empty":"","zero":0,"none":null,"list":[],"flag":true,"off":false}`)
	tests := []struct {
		cond string
		want bool
	}{
		{`$.language == "en"`, true},
		{`$.language == "fr"`, false},
		{`$.language != "fr"`, true},
		{`$.score >= 0.5`, true},
		{`$.score > 0.72`, false},
		{`$.score <= 0.72`, true},
		{`$.score < 1e0`, true},
		{`$.n == 3`, true},
		{`$.n == 3.0`, true},
		{`$.n > -1`, true},
		{`$.label < "q"`, true},     // strings order lexically
		{`$.label > 1`, false},      // a string and a number do not order
		{`$.missing > 1`, false},    // nor null and a number
		{`$.missing == null`, true}, // a missing path reads null
		{`$.none == null`, true},    // so does JSON null
		{`$.text contains "JetStream"`, true},
		{`$.text contains "jetstream"`, false}, // contains is case-sensitive
		{`$.text matches "(?i)\\bwhat\\b"`, true},
		{`$.text matches "^how"`, false},
		{`$.score matches "0"`, false}, // matches wants a string
		{`$.tags contains "question"`, true},
		{`$.tags contains "long"`, false},
		{`$.n contains 3`, false},
		{`$.nested.a.b[1] == 20`, true},
		{`$.nested.a.b[2].c == "deep"`, true},
		{`$.nested.a.b[9] == null`, true},
		{`$.nested["a"]["b"][0] == 10`, true},
		{`$["odd key"] == "x"`, true},
		{`$.language.deeper == null`, true},
		{`$.flag`, true},
		{`$.off`, false},
		{`$.empty`, false},
		{`$.zero`, false},
		{`$.list`, false},
		{`$.tags`, true},
		{`$.missing`, false},
		{`!$.missing`, true},
		{`!!$.flag`, true},
		{`$.language == "en" && $.score > 0.9`, false},
		{`$.language == "en" && $.score > 0.5`, true},
		{`$.language == "fr" || $.score > 0.5`, true},
		{`$.language == "fr" || $.score > 0.9 && $.flag`, false}, // && binds tighter
		{`($.language == "fr" || $.score > 0.5) && $.flag`, true},
		{`!($.language == "en")`, false},
		{`$.tags == ["question", "short"]`, false}, // no array literals: a parse error, see below
	}
	for _, tc := range tests {
		e, err := Parse(tc.cond)
		if tc.cond == `$.tags == ["question", "short"]` {
			if err == nil {
				t.Errorf("Parse(%q) = nil error, want one (no array literals)", tc.cond)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v", tc.cond, err)
			continue
		}
		if got := e.Eval(data); got != tc.want {
			t.Errorf("Eval(%q) = %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func TestEvalOnDataThatIsNotJSON(t *testing.T) {
	e, err := Parse(`$.a == null && !$`)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "not json", "{"} {
		if !e.Eval([]byte(d)) {
			t.Errorf("Eval(%q) = false, want true (every path reads null)", d)
		}
	}
	whole, _ := Parse(`$ == "plain"`)
	if !whole.Eval([]byte(`"plain"`)) {
		t.Errorf(`Eval($ == "plain") on "plain" = false, want true`)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ cond, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{`$.a = 1`, "equality is =="},
		{`$.a == `, "expected a path"},
		{`language == "en"`, `unknown word "language"`},
		{`$.a == "en`, "unterminated string"},
		{`$.a ==== 1`, "expected a path"},
		{`($.a == 1`, "missing ')'"},
		{`$.a == 1)`, `unexpected ")"`},
		{`$.a matches $.b`, "quoted regular expression"},
		{`$.a matches "("`, "regular expression"},
		{`$. == 1`, "field name"},
		{`$[x] == 1`, "[index]"},
		{`$.a == 1 2`, "unexpected"},
		{`$.a # 1`, "unexpected"},
		{`$.a == 1e999`, "bad number"},
		{strings.Repeat("(", 40) + "$.a" + strings.Repeat(")", 40), "nested deeper"},
		{strings.Repeat("!", 40) + "$.a", "nested deeper"},
		{`$.a == "` + strings.Repeat("x", MaxLen) + `"`, "longer than"},
	}
	for _, tc := range tests {
		_, err := Parse(tc.cond)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%.40q) = %v, want an error containing %q", tc.cond, err, tc.want)
		}
	}
}

func TestStringIsTheSource(t *testing.T) {
	const src = `$.a == "b"`
	e, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	if e.String() != src {
		t.Errorf("String() = %q, want %q", e.String(), src)
	}
}

// FuzzParse: any input parses or is refused with an error — never a panic —
// and a parsed condition evaluates on any data without panicking.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`$.language == "en"`, `$.a.b[0] >= 1.5 && !$.c`, `$.t matches "(?i)what" || $["k"] contains "x"`, `(($))`} {
		f.Add(s, `{"language":"en","a":{"b":[2]},"t":"What","k":["x"]}`)
	}
	f.Fuzz(func(t *testing.T, cond, data string) {
		e, err := Parse(cond)
		if err != nil {
			return
		}
		_ = e.Eval([]byte(data))
	})
}

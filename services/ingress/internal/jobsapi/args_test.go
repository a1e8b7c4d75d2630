package jobsapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jetserve/jetserve/pkg/serve"
)

func TestArgs(t *testing.T) {
	args, err := Args(map[string][]string{"num_epochs": {"5"}, "tags": {"a", "b"}, "dataset": {"q"}},
		[]byte(`{"dataset": "body wins", "lr": 0.1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"num_epochs": `"5"`, "tags": `["a","b"]`, "dataset": `"body wins"`, "lr": `0.1`}
	for k, v := range want {
		if string(args[k]) != v {
			t.Errorf("Args()[%s] = %s, want %s", k, args[k], v)
		}
	}
}

func TestArgsRefusesWithTheArgumentNamed(t *testing.T) {
	tests := []struct {
		name  string
		query map[string][]string
		body  string
		want  string
	}{
		{"invalid UTF-8 in a query value", map[string][]string{"dataset": {"a\xffb"}}, "", `argument "dataset": not valid UTF-8`},
		{"invalid UTF-8 in a query name", map[string][]string{"d\xff": {"x"}}, "", `its name is not valid UTF-8`},
		{"invalid UTF-8 in a body value", nil, "{\"dataset\": \"a\xffb\", \"n\": 1}", `argument "dataset": not valid UTF-8`},
		{"invalid UTF-8 in a body name", nil, "{\"d\xff\": 1}", `its name is not valid UTF-8`},
		{"a body that is not an object", nil, `[1, 2]`, "want an object of arguments"},
		{"a body that is null", nil, `null`, "want an object of arguments"},
		{"malformed JSON", nil, `{"a": `, "malformed JSON body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Args(tc.query, []byte(tc.body))
			var se *serve.Error
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Msg, tc.want) {
				t.Fatalf("Args() = %v, want a 400 containing %q", err, tc.want)
			}
		})
	}
}

// FuzzArgs: whatever a client sends, Args either refuses it with a 400 or
// returns arguments that are valid UTF-8 JSON values (what is stored in
// the job record and served back) and that encode as one JSON object.
func FuzzArgs(f *testing.F) {
	for _, s := range []struct{ q, body string }{
		{"5", `{"num_epochs": 5}`},
		{"", `{"dataset": "foo1", "tags": ["a", "b"], "nested": {"x": null}}`},
		{"a\xffb", ""},
		{"", "{\"k\": \"\xff\"}"},
		{"x", `[1]`},
		{"", `{"a": 1, "a": 2}`},
		{"", " "},
	} {
		f.Add(s.q, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, qv string, body []byte) {
		args, err := Args(map[string][]string{"q": {qv}}, body)
		if err != nil {
			var se *serve.Error
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
				t.Fatalf("Args() error %v is not a 400 *serve.Error", err)
			}
			return
		}
		for k, v := range args {
			if !utf8.ValidString(k) || !utf8.Valid(v) || !json.Valid(v) {
				t.Fatalf("Args() accepted %q = %q: not valid UTF-8 JSON", k, v)
			}
		}
		b, err := json.Marshal(args)
		if err != nil || !utf8.Valid(b) {
			t.Fatalf("accepted arguments do not encode: %v", err)
		}
	})
}

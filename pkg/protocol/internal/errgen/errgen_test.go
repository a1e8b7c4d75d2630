package errgen

import (
	"strings"
	"testing"
)

func TestParseRefusesBadCatalogues(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"unknown field", `{"codes":[{"code":"a","http":400,"meaning":"m","retry":true}]}`, `unknown field "retry"`},
		{"not snake_case", `{"codes":[{"code":"BadThing","http":400,"meaning":"m"}]}`, "not snake_case"},
		{"twice", `{"codes":[{"code":"a","http":400,"meaning":"m"},{"code":"a","http":404,"meaning":"m"}]}`, `code "a" twice`},
		{"not an error status", `{"codes":[{"code":"a","http":200,"meaning":"m"}]}`, "not an error status"},
		{"no meaning", `{"codes":[{"code":"a","http":400}]}`, "no meaning"},
		{"not JSON", `{"codes":[`, "decode catalogue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%s) = %v, want an error with %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestGoName(t *testing.T) {
	for _, tc := range []struct {
		e    Code
		want string
	}{
		{Code{Code: "bad_request"}, "ErrBadRequest"},
		{Code{Code: "uri_too_long"}, "ErrURITooLong"},
		{Code{Code: "request_id_in_use"}, "ErrRequestIDInUse"},
		{Code{Code: "handler_error", Go: "ErrHandler"}, "ErrHandler"},
	} {
		if got := tc.e.GoName(); got != tc.want {
			t.Errorf("GoName(%+v) = %s, want %s", tc.e, got, tc.want)
		}
	}
}

func TestGenerate(t *testing.T) {
	c, err := Parse([]byte(`{"codes":[{"code":"busy","http":503,"retry_after":true,"retryable":true,"meaning":"try later"},{"code":"bad","http":400,"meaning":"no"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	src, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"// Code generated", "ErrBusy ErrorCode = \"busy\"", "case ErrBusy:\n\t\treturn 503",
		"case ErrBad:\n\t\treturn 400", "func (c ErrorCode) RetryAfter() bool {\n\tswitch c {\n\tcase ErrBusy:",
	} {
		if !strings.Contains(string(src), want) {
			t.Errorf("Generate() lacks %q:\n%s", want, src)
		}
	}
}

package routes

import "testing"

func TestMatch(t *testing.T) {
	tab := New([]Route{
		{Prefix: "/text", App: "text", Ingress: "t"},
		{Prefix: "/text/v2", App: "text2", Ingress: "t2"},
		{Prefix: "/img", App: "img", Ingress: "i"},
	})
	tests := []struct {
		path, app, rest string
		ok              bool
	}{
		{"/text", "text", "/", true},
		{"/text/", "text", "/", true},
		{"/text/x/y", "text", "/x/y", true},
		{"/textual", "", "", false},
		{"/text/v2", "text2", "/", true},
		{"/text/v2/gen", "text2", "/gen", true},
		{"/text/v20", "text", "/v20", true},
		{"/img", "img", "/", true},
		{"/", "", "", false},
		{"/other", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r, rest, ok := tab.Match(tt.path)
			if ok != tt.ok || r.App != tt.app || rest != tt.rest {
				t.Errorf("Match(%q) = %q, %q, %v, want %q, %q, %v", tt.path, r.App, rest, ok, tt.app, tt.rest, tt.ok)
			}
		})
	}
}

func TestMatchRoot(t *testing.T) {
	tab := New([]Route{{Prefix: "/", App: "root"}, {Prefix: "/a", App: "a"}})
	for path, want := range map[string]string{"/": "root", "/x": "root", "/a/b": "a", "/ab": "root"} {
		if r, _, _ := tab.Match(path); r.App != want {
			t.Errorf("Match(%q) = %q, want %q", path, r.App, want)
		}
	}
	var nilTab *Table
	if _, _, ok := nilTab.Match("/"); ok {
		t.Error("nil table matched")
	}
}

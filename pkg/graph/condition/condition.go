// Package condition is the small expression language of a graph's switch
// conditions: a test on JSON fields of the data a switch node receives
// (the request, or the output of the step before it).
//
//	$.language == "en"
//	$.score >= 0.5 && $.label != "spam"
//	$.text matches "(?i)\bwhat\b" || $.tags contains "question"
//	!$.urgent
//
// Grammar (precedence from low to high: ||, &&, !, comparison):
//
//	expr    = and { "||" and }
//	and     = unary { "&&" unary }
//	unary   = "!" unary | "(" expr ")" | operand [ op operand ]
//	op      = "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "matches"
//	operand = path | string | number | "true" | "false" | "null"
//	path    = "$" { "." name | "[" index "]" | "[" string "]" }
//
// Strings are double-quoted with Go/JSON escapes. A path reads the JSON
// data: $ is all of it, $.a.b a field, $.items[0] an element; a path that
// does not exist (or data that is not JSON) reads null. Semantics:
//
//   - An operand alone is true when it is not null, false, 0, "", [] or {}.
//   - == and != compare JSON values (numbers as numbers, objects deeply).
//   - < <= > >= compare two numbers or two strings; anything else is false.
//   - a contains b: a string holds the string b, or an array holds an
//     element equal to b; otherwise false.
//   - a matches "re": a is a string matching the Go regular expression re
//     (RE2: linear time), which must be a string literal, compiled when
//     the condition is parsed.
//
// Parse checks a condition once (at deploy, naming what is wrong); Eval is
// then safe for concurrent use and never fails.
package condition

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// MaxLen bounds a condition's length.
const MaxLen = 1024

// maxDepth bounds nesting (parentheses and !), so parsing never recurses
// without bound.
const maxDepth = 32

// Expr is a parsed condition.
type Expr struct {
	src  string
	root node
}

// String returns the condition as written.
func (e *Expr) String() string { return e.src }

// Parse parses a condition. The error says what is wrong and where.
func Parse(src string) (*Expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("empty condition")
	}
	if len(src) > MaxLen {
		return nil, fmt.Errorf("condition longer than %d bytes", MaxLen)
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, fmt.Errorf("unexpected %s at offset %d", t, t.pos)
	}
	return &Expr{src: src, root: n}, nil
}

// Eval evaluates the condition on data, a JSON document. Data that is not
// JSON is null to every path.
func (e *Expr) Eval(data []byte) bool {
	var v any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &v); err != nil {
			v = nil
		}
	}
	return e.EvalValue(v)
}

// EvalValue evaluates the condition on a decoded JSON value (as
// encoding/json decodes into any).
func (e *Expr) EvalValue(v any) bool { return truthy(e.root.eval(v)) }

// node is one expression.
type node interface{ eval(data any) any }

type (
	orNode  struct{ l, r node }
	andNode struct{ l, r node }
	notNode struct{ x node }
	cmpNode struct {
		op   string
		l, r node
	}
	matchNode struct {
		l  node
		re *regexp.Regexp
	}
	litNode  struct{ v any }
	pathNode struct{ steps []any } // string: field, int: index
)

func (n orNode) eval(d any) any  { return truthy(n.l.eval(d)) || truthy(n.r.eval(d)) }
func (n andNode) eval(d any) any { return truthy(n.l.eval(d)) && truthy(n.r.eval(d)) }
func (n notNode) eval(d any) any { return !truthy(n.x.eval(d)) }
func (n litNode) eval(any) any   { return n.v }

func (n pathNode) eval(d any) any {
	cur := d
	for _, s := range n.steps {
		switch k := s.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			a, ok := cur.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			cur = a[k]
		}
	}
	return cur
}

func (n matchNode) eval(d any) any {
	s, ok := n.l.eval(d).(string)
	return ok && n.re.MatchString(s)
}

func (n cmpNode) eval(d any) any {
	l, r := n.l.eval(d), n.r.eval(d)
	switch n.op {
	case "==":
		return equal(l, r)
	case "!=":
		return !equal(l, r)
	case "contains":
		switch x := l.(type) {
		case string:
			s, ok := r.(string)
			return ok && strings.Contains(x, s)
		case []any:
			for _, e := range x {
				if equal(e, r) {
					return true
				}
			}
		}
		return false
	}
	c, ok := compare(l, r)
	if !ok {
		return false
	}
	switch n.op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	}
	return c >= 0 // ">="
}

// truthy is false for null, false, 0, "", [] and {}.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

func equal(a, b any) bool {
	if fa, ok := a.(float64); ok {
		fb, ok := b.(float64)
		return ok && fa == fb
	}
	return reflect.DeepEqual(a, b)
}

// compare orders two numbers or two strings.
func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok || math.IsNaN(x) || math.IsNaN(y) {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	}
	return 0, false
}

// Tokens.

type tokKind int

const (
	tEOF tokKind = iota
	tPath
	tString
	tNumber
	tWord // true, false, null, contains, matches
	tOp   // == != < <= > >= && || ! ( )
)

type token struct {
	kind tokKind
	text string // the source text (a path's, or an operator)
	val  any    // string, number, or a path's steps
	pos  int
}

func (t token) String() string {
	if t.kind == tEOF {
		return "end of condition"
	}
	return strconv.Quote(t.text)
}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '$':
			start := i
			steps, n, err := lexPath(src[i:])
			if err != nil {
				return nil, fmt.Errorf("path at offset %d: %w", start, err)
			}
			i += n
			toks = append(toks, token{kind: tPath, text: src[start:i], val: steps, pos: start})
		case c == '"':
			s, n, err := lexString(src[i:])
			if err != nil {
				return nil, fmt.Errorf("string at offset %d: %w", i, err)
			}
			toks = append(toks, token{kind: tString, text: src[i : i+n], val: s, pos: i})
			i += n
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(src) && strings.IndexByte("0123456789.eE+-", src[j]) >= 0 {
				if (src[j] == '+' || src[j] == '-') && src[j-1] != 'e' && src[j-1] != 'E' {
					break
				}
				j++
			}
			f, err := strconv.ParseFloat(src[i:j], 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("bad number %q at offset %d", src[i:j], i)
			}
			toks = append(toks, token{kind: tNumber, text: src[i:j], val: f, pos: i})
			i = j
		case isIdentStart(rune(c)):
			j := i
			for j < len(src) && isIdentPart(rune(src[j])) {
				j++
			}
			w := src[i:j]
			switch w {
			case "true", "false", "null", "contains", "matches":
			default:
				return nil, fmt.Errorf("unknown word %q at offset %d (a path starts with $, a string is quoted; words are true, false, null, contains, matches)", w, i)
			}
			toks = append(toks, token{kind: tWord, text: w, pos: i})
			i = j
		default:
			op := ""
			for _, o := range []string{"==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")"} {
				if strings.HasPrefix(src[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				if c == '=' {
					return nil, fmt.Errorf("unexpected '=' at offset %d (equality is ==)", i)
				}
				return nil, fmt.Errorf("unexpected %q at offset %d", rune(c), i)
			}
			toks = append(toks, token{kind: tOp, text: op, pos: i})
			i += len(op)
		}
	}
	return append(toks, token{kind: tEOF, pos: len(src)}), nil
}

func isIdentStart(r rune) bool { return r == '_' || unicode.IsLetter(r) }
func isIdentPart(r rune) bool {
	return r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// lexPath reads $ followed by .name, [index] and ["name"] steps.
func lexPath(s string) ([]any, int, error) {
	var steps []any
	i := 1
	for i < len(s) {
		switch s[i] {
		case '.':
			j := i + 1
			for j < len(s) && (s[j] < 0x80 && isIdentPart(rune(s[j]))) {
				j++
			}
			if j == i+1 {
				return nil, 0, fmt.Errorf("a field name must follow '.' (use [\"name\"] for other characters)")
			}
			steps = append(steps, s[i+1:j])
			i = j
		case '[':
			if i+1 < len(s) && s[i+1] == '"' {
				str, n, err := lexString(s[i+1:])
				if err != nil {
					return nil, 0, err
				}
				j := i + 1 + n
				if j >= len(s) || s[j] != ']' {
					return nil, 0, fmt.Errorf("missing ']'")
				}
				steps = append(steps, str)
				i = j + 1
				continue
			}
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if j == i+1 || j >= len(s) || s[j] != ']' {
				return nil, 0, fmt.Errorf("want [index] or [\"name\"]")
			}
			n, err := strconv.Atoi(s[i+1 : j])
			if err != nil {
				return nil, 0, fmt.Errorf("index %q: %w", s[i+1:j], err)
			}
			steps = append(steps, n)
			i = j + 1
		default:
			return steps, i, nil
		}
	}
	return steps, i, nil
}

// lexString reads a double-quoted string with JSON escapes.
func lexString(s string) (string, int, error) {
	for j := 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			var out string
			if err := json.Unmarshal([]byte(s[:j+1]), &out); err != nil {
				return "", 0, fmt.Errorf("bad string %s: %w", s[:j+1], err)
			}
			return out, j + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token { t := p.toks[p.i]; p.i++; return t }

func (p *parser) isOp(op string) bool {
	t := p.peek()
	return (t.kind == tOp || t.kind == tWord) && t.text == op
}

func (p *parser) expr(depth int) (node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("condition nested deeper than %d", maxDepth)
	}
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.isOp("||") {
		p.next()
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = orNode{l, r}
	}
	return l, nil
}

func (p *parser) and(depth int) (node, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.isOp("&&") {
		p.next()
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = andNode{l, r}
	}
	return l, nil
}

func (p *parser) unary(depth int) (node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("condition nested deeper than %d", maxDepth)
	}
	switch {
	case p.isOp("!"):
		p.next()
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	case p.isOp("("):
		open := p.next()
		x, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.isOp(")") {
			return nil, fmt.Errorf("missing ')' for '(' at offset %d, found %s", open.pos, p.peek())
		}
		p.next()
		return x, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tOp && isComparison(t.text):
		p.next()
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		return cmpNode{op: t.text, l: l, r: r}, nil
	case t.kind == tWord && t.text == "contains":
		p.next()
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		return cmpNode{op: "contains", l: l, r: r}, nil
	case t.kind == tWord && t.text == "matches":
		p.next()
		r := p.next()
		if r.kind != tString {
			return nil, fmt.Errorf("matches takes a quoted regular expression, found %s at offset %d", r, r.pos)
		}
		re, err := regexp.Compile(r.val.(string))
		if err != nil {
			return nil, fmt.Errorf("regular expression at offset %d: %w", r.pos, err)
		}
		return matchNode{l: l, re: re}, nil
	}
	return l, nil
}

// isComparison reports the comparison operators written with symbols.
func isComparison(op string) bool {
	switch op {
	case "==", "!=", "<", "<=", ">", ">=":
		return true
	}
	return false
}

func (p *parser) operand() (node, error) {
	t := p.next()
	switch t.kind {
	case tPath:
		return pathNode{steps: t.val.([]any)}, nil
	case tString, tNumber:
		return litNode{v: t.val}, nil
	case tWord:
		switch t.text {
		case "true":
			return litNode{v: true}, nil
		case "false":
			return litNode{v: false}, nil
		case "null":
			return litNode{v: nil}, nil
		}
	}
	return nil, fmt.Errorf("expected a path ($.field), a string, a number, true, false or null at offset %d, found %s", t.pos, t)
}

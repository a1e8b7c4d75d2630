package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Comment returns the comment to write at a field path of the config
// ("" for none): for "" the document's head comment; for a list element
// ("applications[0]", "applications[0].deployments[2]") a comment above
// it; for a field ("applications[0].deployments[2].max_ongoing_requests")
// a comment at the end of its line.
type Comment func(path string) string

// YAML writes c as the serve-config YAML an operator edits: the config's
// field names in their declared order, only the fields that are set
// (defaults stay implicit), durations as Go durations ("30s", "2h"),
// sizes in binary units ("64Mi"), user_config in its own key order,
// short objects (resources, user_config, graph steps) and lists of
// scalars on one line, and comment's comments. Parse of the result gives c
// back with its defaults filled.
func YAML(c ServeConfig, comment Comment) ([]byte, error) {
	if comment == nil {
		comment = func(string) string { return "" }
	}
	w := yamlWriter{comment: comment}
	root, err := w.value(reflect.ValueOf(c), "")
	if err != nil {
		return nil, err
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}, HeadComment: comment("")}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode config as YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config as YAML: %w", err)
	}
	return b.Bytes(), nil
}

type yamlWriter struct{ comment Comment }

var (
	durationType     = reflect.TypeOf(Duration(0))
	bytesType        = reflect.TypeOf(Bytes(0))
	intOrPercentType = reflect.TypeOf(IntOrPercent(""))
)

// oneLine reports the struct types written on one line: {cpu: 0.25,
// memory: 64Mi}.
func oneLine(t reflect.Type) bool {
	return t == reflect.TypeOf(Resources{}) || t == reflect.TypeOf(GraphStep{})
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func (w yamlWriter) value(v reflect.Value, path string) (*yaml.Node, error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	switch v.Type() {
	case durationType:
		return scalar(FormatDuration(v.Interface().(Duration).D())), nil
	case bytesType:
		return scalar(FormatBytes(v.Interface().(Bytes))), nil
	case intOrPercentType:
		return scalar(v.String()), nil
	case rawMessageType:
		return rawYAML(v.Bytes(), path)
	}
	switch v.Kind() {
	case reflect.Struct:
		return w.structNode(v, path)
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		flow := true
		for i := range v.Len() {
			e := v.Index(i)
			for e.Kind() == reflect.Pointer {
				e = e.Elem()
			}
			if e.Kind() == reflect.Struct || e.Kind() == reflect.Map {
				flow = false // a list of objects: one per line
			}
			c, err := w.value(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			c.HeadComment = w.comment(fmt.Sprintf("%s[%d]", path, i))
			n.Content = append(n.Content, c)
		}
		if flow {
			n.Style = yaml.FlowStyle
		}
		return n, nil
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for _, k := range keys {
			c, err := w.value(v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())), path+"."+k)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, scalar(k), c)
		}
		return n, nil
	case reflect.String:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.String()}, nil
	case reflect.Bool:
		return scalar(strconv.FormatBool(v.Bool())), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar(strconv.FormatInt(v.Int(), 10)), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return scalar(strconv.FormatUint(v.Uint(), 10)), nil
	case reflect.Float32, reflect.Float64:
		return scalar(strconv.FormatFloat(v.Float(), 'g', -1, 64)), nil
	}
	return nil, fmt.Errorf("%s: cannot write a %s as YAML", path, v.Type())
}

func (w yamlWriter) structNode(v reflect.Value, path string) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	if oneLine(v.Type()) {
		n.Style = yaml.FlowStyle
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		optional := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
		if optional && (fv.IsZero() || (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.Len() == 0) {
			continue
		}
		fp := join(path, name)
		c, err := w.value(fv, fp)
		if err != nil {
			return nil, err
		}
		c.LineComment = w.comment(fp)
		n.Content = append(n.Content, scalar(name), c)
	}
	return n, nil
}

// rawYAML turns a JSON value (user_config) into a one-line YAML value,
// keeping its key order.
func rawYAML(raw []byte, path string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil || len(doc.Content) != 1 {
		return nil, fmt.Errorf("%s: not valid JSON: %s", path, raw)
	}
	var plain func(n *yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		if n.Kind != yaml.ScalarNode {
			n.Style = yaml.FlowStyle
		}
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(doc.Content[0])
	return doc.Content[0], nil
}

// FormatDuration writes d as a Go duration without zero units: "2h", not
// "2h0m0s"; "1m30s"; "250ms".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// FormatBytes writes b in the largest binary unit that divides it
// (64Mi, 2Gi), else in bytes.
func FormatBytes(b Bytes) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

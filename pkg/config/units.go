package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("10s",
// "1m30s") or as a number of seconds (10, 0.5), the way Ray's *_s fields are.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts "10s" or 10 (seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		*d = Duration(x * float64(time.Second))
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("not a duration (want e.g. \"10s\" or a number of seconds): %q", x)
		}
		*d = Duration(p)
	default:
		return fmt.Errorf("not a duration (want e.g. \"10s\" or a number of seconds): %s", b)
	}
	if *d < 0 {
		return fmt.Errorf("must not be negative: %s", b)
	}
	return nil
}

// Bytes is a size written as an integer or a quantity: 512Mi, 2Gi, 1G, 100k.
type Bytes int64

// MarshalJSON writes b as a plain integer.
func (b Bytes) MarshalJSON() ([]byte, error) { return json.Marshal(int64(b)) }

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseBytes parses an integer or a quantity such as 512Mi or 2G.
func ParseBytes(s string) (Bytes, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("not a size (want e.g. 512Mi, 2G or bytes): %q", s)
	}
	return Bytes(f * float64(mult)), nil
}

// UnmarshalJSON accepts an integer or a quantity string.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		if x < 0 {
			return fmt.Errorf("must not be negative: %v", x)
		}
		*b = Bytes(x)
		return nil
	case string:
		p, err := ParseBytes(x)
		if err != nil {
			return err
		}
		*b = p
		return nil
	}
	return fmt.Errorf("not a size (want e.g. 512Mi, 2G or bytes): %s", data)
}

// IntOrPercent is a number of replicas written as an integer (1) or as a
// percentage of the deployment's target ("25%"), as Kubernetes' rolling
// update parameters are. Its zero value is unset.
type IntOrPercent string

// ParseIntOrPercent parses "3" or "25%": a whole number ≥ 0, or a whole
// percentage 0..100.
func ParseIntOrPercent(s string) (IntOrPercent, error) {
	v, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return "", fmt.Errorf("want a whole number of replicas or a percentage such as \"25%%\", got %q", s)
	case n < 0:
		return "", fmt.Errorf("must not be negative, got %q", s)
	case pct && n > 100:
		return "", fmt.Errorf("a percentage must be 0%%..100%%, got %q", s)
	case pct:
		return IntOrPercent(strconv.Itoa(n) + "%"), nil
	}
	return IntOrPercent(strconv.Itoa(n)), nil
}

// UnmarshalJSON accepts an integer or a string ("2", "25%").
func (q *IntOrPercent) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var s string
	switch x := v.(type) {
	case float64:
		if x != float64(int(x)) {
			return fmt.Errorf("want a whole number of replicas or a percentage such as \"25%%\", got %v", x)
		}
		s = strconv.Itoa(int(x))
	case string:
		s = x
	default:
		return fmt.Errorf("want a whole number of replicas or a percentage such as \"25%%\", got %s", b)
	}
	p, err := ParseIntOrPercent(s)
	if err != nil {
		return err
	}
	*q = p
	return nil
}

// MarshalJSON writes a count as a number and a percentage as a string.
func (q IntOrPercent) MarshalJSON() ([]byte, error) {
	if n, err := strconv.Atoi(string(q)); err == nil {
		return json.Marshal(n)
	}
	return json.Marshal(string(q))
}

// Of resolves q against total replicas: a count as is; a percentage
// rounded down, but at least 1 unless it is 0% (so "25%" of 2 replicas is
// 1, as a rolling update that may never go below its target could wait
// forever). Unset or malformed is 0.
func (q IntOrPercent) Of(total int) int {
	v, pct := strings.CutSuffix(string(q), "%")
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0
	}
	if !pct {
		return n
	}
	return max(1, total*n/100)
}

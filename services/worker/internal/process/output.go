package process

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

// maxLine is the longest line logged as one event; a longer line is
// logged in pieces of this size.
const maxLine = 16 << 10

// maxTailLine is how much of one stderr line a failure message keeps.
const maxTailLine = 512

// pump logs every line read from r as one event tagged with stream until
// r ends, keeping stderr's last lines in keep (if not nil).
func pump(r io.ReadCloser, log zerolog.Logger, stream string, keep *tail) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := string(bytes.TrimRight(line, "\r\n"))
			log.Info().Str("stream", stream).Msg(text)
			if keep != nil {
				keep.add(text)
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// tail keeps the last n lines written to it.
type tail struct {
	mu    sync.Mutex
	lines []string // guarded by mu; a ring of at most n lines
	next  int      // guarded by mu
	n     int
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	if len(line) > maxTailLine {
		cut := maxTailLine
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) < t.n {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % t.n
}

// reset forgets every line (a new child starts).
func (t *tail) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines, t.next = t.lines[:0], 0
}

// Lines returns the kept lines, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines))
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}

// describe is the kept lines as the end of a failure message.
func (t *tail) describe() string {
	lines := t.Lines()
	if len(lines) == 0 {
		return "; no stderr output"
	}
	return "; last stderr lines:\n" + strings.Join(lines, "\n")
}

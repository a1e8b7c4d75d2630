package wire

import (
	"bytes"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// FuzzDecode: a replica or router decodes whatever headers and body
// arrive on its subject without panicking; a request re-encoded from what
// was decoded decodes to the same request, and a response decodes with a
// valid HTTP status.
func FuzzDecode(f *testing.F) {
	f.Add("POST", "/analyze", "a=1&b=%zz", "summarize", "1700000000000", "Http-Content-Type", "application/json", []byte(`{"text":"x"}`))
	f.Add("", "", "", "", "-5", "Http-", "", []byte(nil))
	f.Add("GET", "no-slash", ";;;", "", "99999999999999999999", "Jetserve-Status", "700", []byte{0xff})
	f.Fuzz(func(t *testing.T, method, path, query, call, deadline, hk, hv string, body []byte) {
		m := &nats.Msg{Header: nats.Header{}, Data: body}
		m.Header.Set(protocol.HdrMethod, method)
		m.Header.Set(protocol.HdrPath, path)
		m.Header.Set(protocol.HdrQuery, query)
		m.Header.Set(protocol.HdrCall, call)
		m.Header.Set(protocol.HdrDeadline, deadline)
		m.Header.Add(hk, hv)
		req := DecodeRequest(m)
		Deadline(m)
		if req.Path == "" {
			t.Fatal("DecodeRequest gave an empty path, want at least /")
		}
		again := DecodeRequest(EncodeRequest("s", req))
		if again.Method != req.Method || again.Path != req.Path || again.Call != req.Call || !bytes.Equal(again.Body, req.Body) {
			t.Fatalf("re-encoded request differs: %+v vs %+v", again, req)
		}
		if resp := DecodeResponse(m); resp.Status < 100 || resp.Status > 599 {
			t.Fatalf("DecodeResponse status %d: net/http cannot write it", resp.Status)
		}
		ErrorCode(m)
	})
}

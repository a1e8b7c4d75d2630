package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// largeBodyEcho serves diag.Echo's size/len semantics with plain net/http:
// the raw baseline of the large-payload rows.
func largeBodyEcho(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if size, err := strconv.Atoi(r.URL.Query().Get("size")); err == nil && size >= 0 {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(bytes.Repeat([]byte{'x'}, size))
		return
	}
	_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
}

// postLarge sends body to url and checks the answer: want bytes of
// 'x' when wantSize >= 0, else the request body's length.
func postLarge(client *http.Client, url string, body []byte, wantSize int) error {
	resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s %.200q", url, resp.Status, got)
	}
	if wantSize >= 0 && (len(got) != wantSize || (wantSize > 0 && got[0] != 'x')) {
		return fmt.Errorf("POST %s: %d bytes back, want %d", url, len(got), wantSize)
	}
	if wantSize < 0 && string(got) != strconv.Itoa(len(body)) {
		return fmt.Errorf("POST %s: %q back, want the length %d", url, got, len(body))
	}
	return nil
}

// TestLargeBodies: through the real binaries on a stock nats-server (1 MiB
// max_payload), over both transports (chunked, the default ingress, and
// the object store, a second ingress with body_transport object),
// requests and responses of 0 B, exactly one message, one byte over, 10
// MB and 64 MiB (max_body_bytes) come through whole, 20 MiB echoes both
// ways, and a body over max_body_bytes is refused 413 at once.
func TestLargeBodies(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	object := f.AddIngressWith(map[string]string{"JETSERVE_BODY_TRANSPORT": "object"}, true)
	d := deployment{app: "large", handler: handlerEcho, replicas: 1, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, "large", 1, nil)
	client := &http.Client{Timeout: 2 * time.Minute}
	one := 1<<20 - 64<<10 // what one message carries on a stock server
	for _, tr := range []struct{ name, url string }{{"chunked", f.Ingresses[0].URL()}, {"object", object.URL()}} {
		t.Run(tr.name, func(t *testing.T) {
			base := tr.url + "/large/"
			for _, n := range []int{0, one, one + 1, 10_000_000, 64 << 20} {
				if err := postLarge(client, base+"?len=1", bytes.Repeat([]byte{'y'}, n), -1); err != nil {
					t.Errorf("%d B request: %v", n, err)
				}
				if err := postLarge(client, base+"?size="+strconv.Itoa(n), nil, n); err != nil {
					t.Errorf("%d B response: %v", n, err)
				}
			}
			mb20 := bytes.Repeat([]byte{'x'}, 20<<20)
			if err := postLarge(client, base, mb20, len(mb20)); err != nil {
				t.Errorf("20 MiB echo: %v", err)
			}
			over := make([]byte, 64<<20+1)
			start := time.Now()
			resp, err := client.Post(base, "application/octet-stream", bytes.NewReader(over))
			if err != nil {
				t.Fatalf("64 MiB + 1 request: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Jetserve-Error") != "body_too_large" {
				t.Errorf("64 MiB + 1 request = %s %.200q, want 413 body_too_large", resp.Status, body)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("64 MiB + 1 request answered after %v, want at once", el)
			}
		})
	}
}

// TestLargeBodyReplicaKilled: a worker killed while its replica pulls a
// chunked request body (the client has sent 3 MiB of 20 and waits) ends
// the request with a clear error — 503 replica_lost or 504 timeout — well
// within the request timeout, never a hang; a new worker then serves
// large bodies again.
func TestLargeBodyReplicaKilled(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "large", handler: handlerEcho, replicas: 1, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, "large", 1, nil)
	client := &http.Client{Timeout: 2 * time.Minute}
	pr, pw := io.Pipe()
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", f.URL()+"/large/?len=1", pr)
		req.ContentLength = 20 << 20
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	if _, err := pw.Write(make([]byte, 3<<20)); err != nil {
		t.Fatal(err)
	}
	f.Kill(f.Workers[0].Proc)
	start := time.Now()
	var r result
	select {
	case r = <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("a request whose replica was killed mid-body hangs")
	}
	_ = pw.CloseWithError(errors.New("test over"))
	if r.err != nil || (r.status != http.StatusServiceUnavailable && r.status != http.StatusGatewayTimeout) {
		t.Errorf("request whose replica was killed mid-body = %d %.300q %v, want 503 or 504", r.status, r.body, r.err)
	}
	t.Logf("answered %d %.200s after %v", r.status, r.body, time.Since(start))
	f.AddWorker(true)
	f.WaitApp(deployTimeout, "large", 1, nil)
	if err := postLarge(client, f.URL()+"/large/?len=1", make([]byte, 10_000_000), -1); err != nil {
		t.Errorf("10 MB request after the kill: %v", err)
	}
}

// BenchmarkLargeBody: a 10 MB request (answered with its length) and a
// 10 MB response (to an empty request) through the fleet on a stock
// nats-server (1 MiB max_payload), over both large-body transports — the
// default ingress's chunked messages and a second ingress's object store
// — beside raw net/http doing the same, c=1, rounds interleaved; p50s and
// each transport's ratio to raw (median of the rounds' ratios).
func BenchmarkLargeBody(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	object := f.AddIngressWith(map[string]string{"JETSERVE_BODY_TRANSPORT": "object"}, true)
	d := deployment{app: "large", handler: handlerEcho, replicas: 1, maxOngoing: 8}
	f.Deploy(serveConfig(b, d.application()))
	f.WaitApp(deployTimeout, "large", 1, nil)
	raw := serveHTTP(b, http.HandlerFunc(largeBodyEcho))
	client := &http.Client{Timeout: time.Minute}
	const size = 10_000_000
	body := bytes.Repeat([]byte{'y'}, size)
	rows := []struct {
		name     string
		query    string
		body     []byte
		wantSize int
	}{
		{"10 MB request", "?len=1", body, -1},
		{"10 MB response", "?size=" + strconv.Itoa(size), nil, size},
	}
	targets := []struct{ name, url string }{{"raw", raw}, {"chunked", f.Ingresses[0].URL() + "/large/"},
		{"object", object.URL() + "/large/"}}
	rounds := envInt("JETSERVE_LARGE_ROUNDS", 5)
	const perRound = 4
	lat := map[string][]time.Duration{}
	var ratios = map[string][]float64{}
	for range rounds {
		for _, row := range rows {
			var p50 [3]time.Duration
			for i, target := range targets {
				var ds []time.Duration
				for range perRound {
					start := time.Now()
					if err := postLarge(client, target.url+row.query, row.body, row.wantSize); err != nil {
						b.Fatalf("%s %s: %v", target.name, row.name, err)
					}
					ds = append(ds, time.Since(start))
				}
				slices.Sort(ds)
				p50[i] = ds[len(ds)/2]
				lat[target.name+"/"+row.name] = append(lat[target.name+"/"+row.name], ds...)
			}
			for i, target := range targets[1:] {
				k := target.name + "/" + row.name
				ratios[k] = append(ratios[k], p50[i+1].Seconds()/p50[0].Seconds())
			}
		}
	}
	fmt.Printf("\nlarge payloads, c=1, %d interleaved rounds of %d (stock nats-server: 1 MiB max_payload)\n", rounds, perRound)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\traw p50\tchunked p50\tchunked/raw\tobject p50\tobject/raw\ttarget <= 3x (chunked)\t")
	for _, row := range rows {
		p := func(k string) time.Duration {
			ds := slices.Clone(lat[k])
			slices.Sort(ds)
			return ds[len(ds)/2].Round(100 * time.Microsecond)
		}
		rc, ro := median(ratios["chunked/"+row.name]), median(ratios["object/"+row.name])
		v := "met"
		if rc > 3 {
			v = "NOT MET"
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%.2fx\t%v\t%.2fx\t%s\t\n", row.name, p("raw/"+row.name), p("chunked/"+row.name), rc,
			p("object/"+row.name), ro, v)
	}
	tw.Flush()
}

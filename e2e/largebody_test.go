package e2e

import (
	"bytes"
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
// max_payload), a 10 MB request reaches the replica whole, a 10 MB response
// comes back whole, 20 MB echoes both ways, and a body over the ingress's
// max_body_bytes (here 32 MiB) is refused 413 at once.
func TestLargeBodies(t *testing.T) {
	f := startFleet(t, fleet.Options{IngressEnv: map[string]string{"JETSERVE_MAX_BODY_BYTES": strconv.Itoa(32 << 20)}})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "large", handler: handlerEcho, replicas: 1, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	f.WaitApp(deployTimeout, "large", 1, nil)
	client := &http.Client{Timeout: time.Minute}
	base := f.URL() + "/large/"
	mb10 := bytes.Repeat([]byte("0123456789"), 1_000_000)
	if err := postLarge(client, base+"?len=1", mb10, -1); err != nil {
		t.Errorf("10 MB request: %v", err)
	}
	if err := postLarge(client, base+"?size=10000000", nil, 10_000_000); err != nil {
		t.Errorf("10 MB response: %v", err)
	}
	mb20 := bytes.Repeat([]byte{'x'}, 20<<20)
	if err := postLarge(client, base, mb20, len(mb20)); err != nil {
		t.Errorf("20 MiB echo: %v", err)
	}
	over := make([]byte, 33<<20)
	start := time.Now()
	resp, err := client.Post(base, "application/octet-stream", bytes.NewReader(over))
	if err != nil {
		t.Fatalf("33 MiB request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Jetserve-Error") != "body_too_large" {
		t.Errorf("33 MiB request = %s %.200q, want 413 body_too_large", resp.Status, body)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("33 MiB request answered after %v, want at once", el)
	}
}

// BenchmarkLargeBody: a 10 MB request (answered with its length) and a
// 10 MB response (to an empty request) through the fleet on a stock
// nats-server (1 MiB max_payload: the bodies go through the object store)
// beside raw net/http doing the same, c=1, rounds interleaved; p50s and
// the median of the per-round ratios (target <= 3x).
func BenchmarkLargeBody(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{})
	f.RequireHandlers(handlerEcho)
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
	rounds := envInt("JETSERVE_LARGE_ROUNDS", 5)
	const perRound = 4
	lat := map[string][]time.Duration{}
	var ratios = map[string][]float64{}
	for range rounds {
		for _, row := range rows {
			var p50 [2]time.Duration
			for i, target := range []string{"raw", "fleet"} {
				url := raw + row.query
				if target == "fleet" {
					url = f.URL() + "/large/" + row.query
				}
				var ds []time.Duration
				for range perRound {
					start := time.Now()
					if err := postLarge(client, url, row.body, row.wantSize); err != nil {
						b.Fatalf("%s %s: %v", target, row.name, err)
					}
					ds = append(ds, time.Since(start))
				}
				slices.Sort(ds)
				p50[i] = ds[len(ds)/2]
				lat[target+"/"+row.name] = append(lat[target+"/"+row.name], ds...)
			}
			ratios[row.name] = append(ratios[row.name], p50[1].Seconds()/p50[0].Seconds())
		}
	}
	fmt.Printf("\nlarge payloads, c=1, %d interleaved rounds of %d (stock nats-server: 1 MiB max_payload)\n", rounds, perRound)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\traw p50\tfleet p50\tfleet/raw (median of rounds)\ttarget <= 3x\t")
	for _, row := range rows {
		p := func(k string) time.Duration {
			ds := slices.Clone(lat[k])
			slices.Sort(ds)
			return ds[len(ds)/2].Round(100 * time.Microsecond)
		}
		r := median(ratios[row.name])
		v := "met"
		if r > 3 {
			v = "NOT MET"
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%.2fx\t%s\t\n", row.name, p("raw/"+row.name), p("fleet/"+row.name), r, v)
	}
	tw.Flush()
}

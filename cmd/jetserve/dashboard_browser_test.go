package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jetserve/jetserve/devfleet/devfleettest"
	"github.com/jetserve/jetserve/pkg/protocol"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the dashboard screenshot to docs/dashboard.png")

// chromium finds Debian's chromium (scripts/chromium.sh installs it). A
// missing browser fails the test, unless JETSERVE_SKIP_BROWSER=1 says to
// skip it on a machine without one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("JETSERVE_SKIP_BROWSER") == "1" {
		t.Skip("no chromium on PATH; skipped because JETSERVE_SKIP_BROWSER=1")
	}
	t.Fatal("no chromium on PATH: install it with scripts/chromium.sh (apt-get install chromium), " +
		"or set JETSERVE_SKIP_BROWSER=1 to skip the browser tests on this machine")
	return ""
}

// TestDashboardInBrowser runs `jetserve dev` with an autoscaled deployment
// and a training method, drives requests and jobs through it, opens the
// dashboard in headless Chromium and checks what a person would see: the
// application, deployment, replica and worker names, job rows with their
// status, the autoscaling chart drawn on screen (its pixels in the
// screenshot), and `jetserve status` agreeing with it.
func TestDashboardInBrowser(t *testing.T) {
	chrome := chromium(t)
	ctx := t.Context()
	fleet := startDev(t, "testdata/dashboard.yaml", devfleettest.Timeouts{Up: 90 * time.Second, Stop: 60 * time.Second})
	base, admin, errs := fleet.Ingress, fleet.Admin, fleet.Err
	waitOK(t, http.MethodPost, base+"/echo/", "hi", 90*time.Second)
	waitOK(t, http.MethodPost, base+"/text/analyze", `{"text":"The battery is great."}`, 90*time.Second)

	// Jobs: one that succeeds, one refused by the model (400: FAILED at
	// once), one long enough to be running when the page is looked at.
	for _, q := range []string{"request_id=quick&num_epochs=2", "request_id=broken&num_epochs=0",
		"request_id=long&num_epochs=10000&dataset=synthetic&size=200000"} {
		resp, err := http.Post(base+"/text/train?"+q, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /text/train?%s = %d, want 202", q, resp.StatusCode)
		}
	}
	// Traffic: 8 callers of a 40 ms echo, until the page was checked.
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopTraffic(); wg.Wait() }()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for deadline := time.Now().Add(3 * time.Minute); tctx.Err() == nil && time.Now().Before(deadline); {
				req, _ := http.NewRequestWithContext(tctx, http.MethodPost, base+"/echo/?delay_ms=40", strings.NewReader("x"))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}

	// Names the page must show, from the admin API.
	var st protocol.Status
	deadline := time.Now().Add(60 * time.Second)
	for {
		b := mustGet(t, admin+"/api/serve/applications")
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Workers) > 0 && len(st.Applications["echo"].Deployments["Echo"].Replicas) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a worker and an Echo replica: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	replicaID := st.Applications["echo"].Deployments["Echo"].Replicas[0].ID
	workerID := st.Workers[0].ID

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("force-device-scale-factor", "1"))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	// The first Run starts the browser and must not carry a timeout.
	if err := chromedp.Do(bctx, chromedp.Navigate(admin+"/dashboard/")); err != nil {
		t.Fatalf("open the dashboard in chromium: %v", err)
	}

	// Wait until the page shows traffic, a running job, the finished ones
	// and a decision on the Echo chart.
	ready := `(() => {
	  const q = s => document.querySelector(s);
	  const job = id => q('tr.job[data-job="' + id + '"]');
	  const rps = [...document.querySelectorAll('tr.deployment[data-deployment="Echo"] td.num')].map(td => td.textContent)[0];
	  return document.body.dataset.loaded === "true" &&
	    !!job("quick") && job("quick").textContent.includes("SUCCEEDED") &&
	    !!job("broken") && job("broken").textContent.includes("FAILED") &&
	    !!job("long") && job("long").textContent.includes("RUNNING") &&
	    document.querySelectorAll('svg.scale-chart[data-deployment="Echo"] circle.decision').length >= 1 &&
	    rps !== undefined && rps !== "–" && rps !== "0";
	})()`
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](ready, chromedp.WithPollingTimeout(150*time.Second),
		chromedp.WithPollingInterval(250*time.Millisecond))); err != nil {
		partial, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("dashboard never showed traffic, jobs and decisions: %v\npage text:\n%s\ndev stderr:\n%s", err, partial, tail(errs.String(), 3000))
	}
	text, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"text", "/text", "Pipeline", "Trainer", "echo", "Echo", replicaID, workerID,
		"text/train", "quick", "broken", "long", "dead-lettered", "Autoscaling", "req/s"} {
		if !strings.Contains(strings.ToLower(text), strings.ToLower(want)) {
			t.Errorf("dashboard text lacks %q:\n%s", want, text)
		}
	}

	// The screenshot: the chart must be drawn where the DOM says it is.
	type rect struct{ X, Y, W, H float64 }
	box, err := chromedp.Run(bctx, chromedp.Evaluate[rect](`(() => {
	  const r = document.querySelector('svg.scale-chart[data-deployment="Echo"]').getBoundingClientRect();
	  return {X: r.x + window.scrollX, Y: r.y + window.scrollY, W: r.width, H: r.height}; })()`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 800 {
		t.Errorf("screenshot is %dx%d, want at least 1000x800", b.Dx(), b.Dy())
	}
	desired := color.RGBA{0x4f, 0x46, 0xe5, 0xff} // the chart's "desired replicas" line and decision dots
	if n := countNear(img, image.Rect(int(box.X), int(box.Y), int(box.X+box.W), int(box.Y+box.H)), desired); n < 50 {
		t.Errorf("screenshot has %d pixels of the desired-replicas colour inside the chart's box %+v, want ≥ 50", n, box)
	}
	if n := distinctColors(img); n < 20 {
		t.Errorf("screenshot has %d distinct colours, want a rendered page (≥ 20)", n)
	}
	saved := t.TempDir() + "/dashboard.png"
	if *updateScreenshot {
		saved = "../../docs/dashboard.png"
	}
	if err := os.WriteFile(saved, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", saved)

	// The long job has been seen running: cancel it (it would keep a core
	// busy until the fleet stops).
	if resp, err := http.Post(base+"/text/train/cancel?request_id=long", "application/json", nil); err == nil {
		resp.Body.Close()
	}

	// `jetserve status` shows the same jobs and autoscaling.
	var sout, serr bytes.Buffer
	if err := run(ctx, []string{"status", "--admin", admin}, nil, strings.NewReader(""), &sout, &serr); err != nil {
		t.Fatalf("jetserve status: %v\n%s", err, serr.String())
	}
	for _, want := range []string{"JOBS", "text/train", "AUTOSCALING", "echo/Echo", "req/s"} {
		if !strings.Contains(sout.String(), want) {
			t.Errorf("jetserve status lacks %q:\n%s", want, sout.String())
		}
	}
}

func waitOK(t *testing.T, method, url, body string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s never answered 200 within %s (last: %v)", method, url, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d, %v: %s", url, resp.StatusCode, err, b)
	}
	return b
}

// countNear counts the pixels of r within a small distance of c.
func countNear(img image.Image, r image.Rectangle, c color.RGBA) int {
	n := 0
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if near(cr>>8, c.R) && near(cg>>8, c.G) && near(cb>>8, c.B) {
				n++
			}
		}
	}
	return n
}

func near(a uint32, b uint8) bool { d := int(a) - int(b); return d > -24 && d < 24 }

func distinctColors(img image.Image) int {
	seen := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
		}
	}
	return len(seen)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("…%s", s[len(s)-n:])
}

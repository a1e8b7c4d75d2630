package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/logtest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

func runServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.NoSigs, o.NoLog = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A wrong password is logged with its reason, /healthz says it while the
// service retries, and neither the log, /healthz nor the error returned
// holds the password.
func TestConnectRefusedCredentialIsLoud(t *testing.T) {
	ns := runServer(t, &server.Options{Users: []*server.User{{Username: "svc", Password: "right-pass-123"}}})
	port := ns.Addr().(*net.TCPAddr).Port
	const wrong = "wrong-pass-456"
	logs := &logtest.Buffer{}
	c := DefaultCommon("127.0.0.1:0")
	c.NATS.URL = fmt.Sprintf("nats://svc:%s@127.0.0.1:%d", wrong, port)
	opsAddr := make(chan net.Addr, 1)
	d := Deps{Log: zerolog.New(logs), OpsReady: func(a net.Addr) { opsAddr <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var cleanup func()
	go func() {
		var err error
		cleanup, err = d.Prepare(ctx, c, "test")
		errc <- err
	}()
	addr := <-opsAddr
	var health string
	waitFor(t, "/healthz to say why", func() bool {
		resp, err := http.Get("http://" + addr.String() + "/healthz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		health = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(health), "authorization violation")
	})
	waitFor(t, "the log line", func() bool { return strings.Contains(logs.String(), "nats connect failed") })
	cancel()
	err := <-errc
	cleanup()
	if err == nil {
		t.Fatal("Prepare() = nil, want an error")
	}
	for what, s := range map[string]string{"log": logs.String(), "healthz": health, "error": err.Error()} {
		if strings.Contains(s, wrong) {
			t.Errorf("%s holds the password: %s", what, s)
		}
	}
	if !strings.Contains(strings.ToLower(logs.String()), "authorization violation") || !strings.Contains(logs.String(), "nats.creds") {
		t.Errorf("log = %s, want the reason and the hint naming nats.creds", logs.String())
	}
	if !strings.Contains(err.Error(), "svc:REDACTED@") || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("Prepare() error = %v, want the redacted URL and the last reason", err)
	}
}

// A server whose certificate the client cannot verify: logged as a TLS
// failure naming nats.tls.ca_file; with the CA given, the service connects.
func TestConnectTLSFailureIsLoud(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir, "127.0.0.1")
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ns := runServer(t, &server.Options{TLSConfig: tc, TLS: true, TLSTimeout: 2})
	url := fmt.Sprintf("tls://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)

	logs := &logtest.Buffer{}
	st := NewConnState()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = ConnectWatched(ctx, NATSConfig{URL: url}, "test", zerolog.New(logs), st)
	if err == nil {
		t.Fatal("ConnectWatched() without the CA = nil, want an error")
	}
	if !strings.Contains(logs.String(), "x509") || !strings.Contains(logs.String(), "nats.tls.ca_file") {
		t.Errorf("log = %s, want the x509 reason and a hint naming nats.tls.ca_file", logs.String())
	}
	if err := st.Check(); err == nil || !strings.Contains(err.Error(), "x509") {
		t.Errorf("Check() = %v, want the TLS reason", err)
	}

	nc, err := ConnectWatched(context.Background(), NATSConfig{URL: url, TLS: NATSTLS{CAFile: caFile}}, "test", zerolog.Nop(), nil)
	if err != nil {
		t.Fatalf("ConnectWatched() with the CA = %v", err)
	}
	nc.Close()
}

// A publish the server's permissions refuse is logged as a permissions
// violation and fails the health check.
func TestPermissionViolationIsLoud(t *testing.T) {
	ns := runServer(t, &server.Options{Users: []*server.User{{Username: "svc", Password: "pw",
		Permissions: &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{"ok.>"}}}}}})
	logs := &logtest.Buffer{}
	st := NewConnState()
	url := fmt.Sprintf("nats://svc:pw@127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)
	nc, err := ConnectWatched(context.Background(), NATSConfig{URL: url}, "test", zerolog.New(logs), st)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := st.Check(); err != nil {
		t.Fatalf("Check() before = %v", err)
	}
	if err := nc.Publish("forbidden.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	waitFor(t, "the violation to be logged", func() bool { return strings.Contains(logs.String(), "permissions violation") })
	if err := st.Check(); err == nil || !strings.Contains(err.Error(), "forbidden.x") {
		t.Errorf("Check() after = %v, want the violation naming the subject", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                           "nats://127.0.0.1:4222",
		"nats://user:pa%40ss@h:4222":                      "nats://user:REDACTED@h:4222",
		"nats://s3cr3ttoken@h:4222":                       "nats://REDACTED@h:4222",
		"nats://a:b@h1:4222, nats://h2:4222,tls://c:d@h3": "nats://a:REDACTED@h1:4222,nats://h2:4222,tls://c:REDACTED@h3",
		"u:p@h:4222": "u:REDACTED@h:4222",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// writeCerts makes a CA and a server certificate for host, signed by it.
func writeCerts(t *testing.T, dir, host string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP(host)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{
		caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// The HTTP server: TLS with a client CA refuses a client without a
// certificate and serves one with; a request head over max_header_bytes is
// answered 431.
func TestServeServerTLSAndLimits(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir, "127.0.0.1")
	tc, err := TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}.Load("tls", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- ServeServer(ctx, Server{Addr: "127.0.0.1:0", TLS: tc, MaxHeaderBytes: 4096, Drain: time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
			Ready:   func(a net.Addr) { addrc <- a }})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("ServeServer() = %v", err)
		}
	}()
	url := "https://" + (<-addrc).String() + "/"
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(pem)
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := noCert.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("GET without a client certificate = %d, want a refused handshake", resp.StatusCode)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := withCert.Get(url)
	if err != nil {
		t.Fatalf("GET with a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with a client certificate = %d, want 200", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err = withCert.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("GET with 16 KiB of headers = %d, want 431", resp.StatusCode)
	}
}

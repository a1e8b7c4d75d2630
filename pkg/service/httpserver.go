package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// HTTPConfig is what a public HTTP server (the ingress, the admin API)
// takes besides its address: TLS and the request-head limits.
type HTTPConfig struct {
	TLS TLSConfig `koanf:"tls"`
	// MaxHeaderBytes bounds the request line and headers together (431
	// beyond; Go's server adds 4 KiB of slack).
	MaxHeaderBytes int `koanf:"max_header_bytes" help:"largest request head (beyond: 431)"`
	// MaxURLBytes bounds the request target, path and query (414 beyond).
	MaxURLBytes int `koanf:"max_url_bytes" help:"longest request URL (beyond: 414)"`
}

// Default request-head limits: nginx's (large_client_header_buffers 4 8k:
// 8 KiB per line, 32 KiB in all).
const (
	DefaultMaxHeaderBytes = 32 << 10
	DefaultMaxURLBytes    = 8 << 10
)

// DefaultHTTPConfig returns the defaults: no TLS, nginx's limits.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{MaxHeaderBytes: DefaultMaxHeaderBytes, MaxURLBytes: DefaultMaxURLBytes}
}

// Validate checks the options; errors name them (without prefix: these
// keys sit at the top level of a service's options).
func (c HTTPConfig) Validate() error {
	var errs []error
	if c.MaxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_header_bytes: must be >= 1024, got %d", c.MaxHeaderBytes))
	}
	if c.MaxURLBytes < 256 || c.MaxURLBytes > c.MaxHeaderBytes {
		errs = append(errs, fmt.Errorf("max_url_bytes: must be 256..max_header_bytes (%d), got %d", c.MaxHeaderBytes, c.MaxURLBytes))
	}
	errs = append(errs, c.TLS.Validate("tls"))
	return errors.Join(errs...)
}

// TLSConfig turns TLS on for a server: a certificate and key (PEM), and,
// for mutual TLS, the CA that client certificates must chain to.
type TLSConfig struct {
	CertFile string `koanf:"cert_file" help:"TLS certificate (with key_file): serve HTTPS; re-read on change"`
	KeyFile  string `koanf:"key_file" help:"TLS key (with cert_file)"`
	// ClientCAFile, when set, makes every client present a certificate
	// signed by one of its CAs (mTLS).
	ClientCAFile string `koanf:"client_ca_file" help:"CA of client certificates: require mTLS"`
}

// Enabled reports whether the server speaks TLS.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" }

// Validate checks that the options come together; the files are read at
// start-up (Load).
func (c TLSConfig) Validate(prefix string) error {
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return fmt.Errorf("%s.cert_file, %s.key_file: set both or neither", prefix, prefix)
	case c.ClientCAFile != "" && c.CertFile == "":
		return fmt.Errorf("%s.client_ca_file: needs %s.cert_file and %s.key_file (mTLS is TLS first)", prefix, prefix, prefix)
	}
	return nil
}

// Load reads the files and returns the server's tls.Config (nil when TLS
// is off). The certificate and key are read again on a handshake after
// either file changed (checked at most once a second), so a renewed
// certificate is served without a restart; a pair that does not load is
// logged and the last good one kept.
func (c TLSConfig) Load(prefix string, log zerolog.Logger) (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	kp := &keyPair{cert: c.CertFile, key: c.KeyFile, log: log}
	if err := kp.load(); err != nil {
		return nil, fmt.Errorf("%s.cert_file, %s.key_file: %w", prefix, prefix, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.client_ca_file: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.client_ca_file %s: no PEM certificate in it", prefix, c.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// keyPair serves a certificate that follows its files.
type keyPair struct {
	cert, key string
	log       zerolog.Logger

	mu      sync.Mutex
	c       *tls.Certificate // guarded by mu
	mods    [2]time.Time     // guarded by mu
	checked time.Time        // guarded by mu
}

func (k *keyPair) stat() ([2]time.Time, error) {
	var m [2]time.Time
	for i, f := range []string{k.cert, k.key} {
		fi, err := os.Stat(f)
		if err != nil {
			return m, err
		}
		m[i] = fi.ModTime()
	}
	return m, nil
}

func (k *keyPair) load() error {
	mods, err := k.stat()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return err
	}
	k.c, k.mods, k.checked = &c, mods, time.Now()
	return nil
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.checked) < time.Second {
		return k.c, nil
	}
	k.checked = time.Now()
	if mods, err := k.stat(); err == nil && mods != k.mods {
		old := k.c
		if err := k.load(); err != nil {
			k.c, k.mods = old, mods
			k.log.Error().Err(err).Str("cert_file", k.cert).Msg("TLS certificate changed but does not load; keeping the last good one")
		} else {
			k.log.Info().Str("cert_file", k.cert).Msg("TLS certificate reloaded")
		}
	}
	return k.c, nil
}

// Server is one HTTP server ServeServer runs.
type Server struct {
	Addr    string
	Handler http.Handler
	// Drain bounds how long shutdown waits for in-flight requests.
	Drain time.Duration
	// Ready, if set, receives the bound address once listening.
	Ready func(net.Addr)
	// TLS, if set, serves HTTPS.
	TLS *tls.Config
	// MaxHeaderBytes bounds the request head (0 = Go's 1 MiB).
	MaxHeaderBytes int
	// Log receives the server's own errors (TLS handshakes refused…).
	Log zerolog.Logger
}

// ServeServer runs s until ctx ends, then shuts it down, waiting up to
// s.Drain for in-flight requests.
func ServeServer(ctx context.Context, s Server) error {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.Addr, err)
	}
	if s.TLS != nil {
		ln = tls.NewListener(ln, s.TLS)
	}
	if s.Ready != nil {
		s.Ready(ln.Addr())
	}
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: s.MaxHeaderBytes,
		ErrorLog: zerologStd(s.Log)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.Addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.Drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down %s: %w", s.Addr, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// zerologStd adapts l to the *log.Logger http.Server writes its own
// errors to (TLS handshakes refused, malformed requests).
func zerologStd(l zerolog.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{l}, "", 0)
}

type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Warn().Str("component", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

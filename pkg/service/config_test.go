package service

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testConfig struct {
	Common  `koanf:",squash"`
	Addr    string        `koanf:"http_addr"`
	Timeout time.Duration `koanf:"request_timeout"`
	Workers int           `koanf:"workers"`
}

func (c testConfig) CommonConfig() Common { return c.Common }

func defaults() testConfig {
	return testConfig{Common: DefaultCommon(":9999"), Addr: ":8000", Timeout: time.Minute, Workers: 2}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("http_addr: \":7000\"\nworkers: 3\nnats:\n  url: nats://file:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		environ []string
		want    testConfig
	}{
		{"defaults", nil, nil, defaults()},
		{"file", []string{"--config", file}, nil, func() testConfig {
			c := defaults()
			c.Addr, c.Workers, c.NATS.URL = ":7000", 3, "nats://file:4222"
			return c
		}()},
		{"env over file", []string{"--config", file}, []string{"JETSERVE_WORKERS=4", "JETSERVE_NATS_URL=nats://env:4222", "HOME=/x"}, func() testConfig {
			c := defaults()
			c.Addr, c.Workers, c.NATS.URL = ":7000", 4, "nats://env:4222"
			return c
		}()},
		{"config file from env", nil, []string{"JETSERVE_CONFIG=" + file}, func() testConfig {
			c := defaults()
			c.Addr, c.Workers, c.NATS.URL = ":7000", 3, "nats://file:4222"
			return c
		}()},
		{"replicas from env", nil, []string{"JETSERVE_NATS_REPLICAS=3"}, func() testConfig {
			c := defaults()
			c.NATS.Replicas = 3
			return c
		}()},
		{"flags over env", []string{"--workers", "5", "--request_timeout", "2s", "--log.level", "debug"}, []string{"JETSERVE_WORKERS=4"}, func() testConfig {
			c := defaults()
			c.Workers, c.Timeout, c.Log.Level = 5, 2*time.Second, "debug"
			return c
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := defaults()
			if err := Load(&got, "test", tc.args, tc.environ, io.Discard); err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if got != tc.want {
				t.Fatalf("Load() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLoadRejectsUnknown(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("http_adr: \":7000\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"unknown file key", []string{"--config", file}, nil, "http_adr"},
		{"unknown env", nil, []string{"JETSERVE_HTTP_ADR=x"}, "JETSERVE_HTTP_ADR"},
		{"unknown flag", []string{"--http-adr", "x"}, nil, "http-adr"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "nope.yaml"},
		{"bad type", []string{"--workers", "many"}, nil, "workers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := defaults()
			err := Load(&c, "test", tc.args, tc.environ, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// A shell that exports the CLI's variables (README: $JETSERVE_API_KEY, …)
// can still start a service; a near miss of one of them is still refused.
func TestLoadPassesOverTheCLIsVariables(t *testing.T) {
	cli := []string{"JETSERVE_URL=http://127.0.0.1:8000", "JETSERVE_ADMIN=http://127.0.0.1:8265",
		"JETSERVE_API_KEY=k", "JETSERVE_API_KEY_FILE=/k", "JETSERVE_ADMIN_KEY=a", "JETSERVE_ADMIN_KEY_FILE=/a"}
	c := defaults()
	if err := Load(&c, "test", nil, append(cli, "JETSERVE_WORKERS=4"), io.Discard); err != nil {
		t.Fatalf("Load(the CLI's variables) = %v, want nil", err)
	}
	if c.Workers != 4 {
		t.Errorf("Load(the CLI's variables) workers = %d, want 4 (from JETSERVE_WORKERS)", c.Workers)
	}
	c = defaults()
	if err := Load(&c, "test", nil, []string{"JETSERVE_API_KEYS=k"}, io.Discard); err == nil || !strings.Contains(err.Error(), "JETSERVE_API_KEYS") {
		t.Errorf("Load(JETSERVE_API_KEYS) = %v, want an error naming it", err)
	}
}

func TestCommonValidate(t *testing.T) {
	c := DefaultCommon("")
	c.Log.Format = "xml"
	c.NATS.URL = ""
	err := c.Validate()
	for _, want := range []string{"log.format", "nats.url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want an error naming %s", err, want)
		}
	}
}

func TestValidateReplicas(t *testing.T) {
	for _, n := range []int{0, -1, 6} {
		c := DefaultCommon("")
		c.NATS.Replicas = n
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nats.replicas") {
			t.Errorf("Validate(nats.replicas=%d) = %v, want an error naming nats.replicas", n, err)
		}
	}
	c := DefaultCommon("")
	c.NATS.Replicas = 3
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(nats.replicas=3) = %v, want nil", err)
	}
}

func TestValidatePingInterval(t *testing.T) {
	c := DefaultCommon("")
	if c.NATS.PingInterval != DefaultPingInterval {
		t.Errorf("default nats.ping_interval = %v, want %v", c.NATS.PingInterval, DefaultPingInterval)
	}
	c.NATS.PingInterval = 10 * time.Millisecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nats.ping_interval") {
		t.Errorf("Validate(nats.ping_interval=10ms) = %v, want an error naming nats.ping_interval", err)
	}
	got := defaults()
	if err := Load(&got, "test", nil, []string{"JETSERVE_NATS_PING_INTERVAL=500ms"}, io.Discard); err != nil {
		t.Fatalf("Load(JETSERVE_NATS_PING_INTERVAL=500ms) = %v", err)
	}
	if got.NATS.PingInterval != 500*time.Millisecond {
		t.Errorf("nats.ping_interval from the environment = %v, want 500ms", got.NATS.PingInterval)
	}
}

package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/jetserve/jetserve/services/router"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/jetserve/jetserve/services/worker"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const k8sDir = "../k8s"

// kustomization is the part of kustomize's Kustomization the manifests use
// (decoded strictly: another field is an error here, to be added on purpose).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name   string `json:"name"`
		NewTag string `json:"newTag"`
	} `json:"images"`
}

// manifests are every resource of the kustomization, decoded strictly.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	scaled      map[string]*ScaledObject
	namespaces  []string
}

func strict(t *testing.T, where string, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

func loadManifests(t *testing.T) (kustomization, manifests) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	strict(t, "kustomization.yaml", b, &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	// Every manifest in the directory is a resource (the NATS chart's
	// values are not: helm takes them).
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && base != "nats-values.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	m := manifests{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaled: map[string]*ScaledObject{}}
	for _, r := range k.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization resource %s: %v", r, err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			where := fmt.Sprintf("%s document %d", r, i)
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			switch gk := head.APIVersion + " " + head.Kind; gk {
			case "apps/v1 Deployment":
				var d appsv1.Deployment
				strict(t, where, doc, &d)
				m.deployments[d.Name] = &d
			case "v1 Service":
				var s corev1.Service
				strict(t, where, doc, &s)
				m.services[s.Name] = &s
			case "policy/v1 PodDisruptionBudget":
				var p policyv1.PodDisruptionBudget
				strict(t, where, doc, &p)
				m.pdbs[p.Name] = &p
			case "keda.sh/v1alpha1 ScaledObject":
				var s ScaledObject
				strict(t, where, doc, &s)
				m.scaled[s.Name] = &s
			case "v1 Namespace":
				var n corev1.Namespace
				strict(t, where, doc, &n)
				m.namespaces = append(m.namespaces, n.Name)
			default:
				t.Errorf("%s: unexpected kind %q", where, gk)
			}
		}
	}
	return k, m
}

// svcOptions are what the manifests must agree with: each service's
// options loaded from a container's env exactly as the binary loads them.
type svcOptions struct {
	load  func(env []string) (service.Common, map[string]string, error) // → common options, named ports
	image string
}

func loadOpts[C service.Configurable](cfg C, name string, ports func(C) map[string]string) func([]string) (service.Common, map[string]string, error) {
	return func(env []string) (service.Common, map[string]string, error) {
		c := cfg
		if err := service.Load(&c, name, nil, env, io.Discard); err != nil {
			return service.Common{}, nil, err
		}
		if err := c.Validate(); err != nil {
			return service.Common{}, nil, err
		}
		p := ports(c)
		p["ops"] = c.CommonConfig().OpsAddr
		return c.CommonConfig(), p, nil
	}
}

var services = map[string]svcOptions{
	"ingress": {load: loadOpts(ingress.DefaultConfig(), "ingress", func(c ingress.Config) map[string]string {
		return map[string]string{"http": c.HTTPAddr}
	})},
	"router": {load: loadOpts(router.DefaultConfig(), "router", func(router.Config) map[string]string { return map[string]string{} })},
	"worker": {load: loadOpts(worker.DefaultConfig(), "worker", func(worker.Config) map[string]string { return map[string]string{} })},
	"scheduler": {load: loadOpts(scheduler.DefaultConfig(), "scheduler", func(c scheduler.Config) map[string]string {
		return map[string]string{"admin": c.AdminAddr}
	})},
	"autoscaler": {load: loadOpts(autoscaler.DefaultConfig(), "autoscaler", func(autoscaler.Config) map[string]string { return map[string]string{} })},
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// TestKubernetesManifests decodes deploy/k8s strictly into the Kubernetes
// and KEDA API types and checks them against the services: every
// JETSERVE_* variable is an option the service accepts (loaded and
// validated as the binary does), container ports are the options' ports,
// probes hit /healthz on the ops port, resources are bounded, PDBs and
// Services select real pods, and KEDA scales the worker on a real job
// stream's consumer.
func TestKubernetesManifests(t *testing.T) {
	k, m := loadManifests(t)
	if k.Namespace != "jetserve" || !slices.Contains(m.namespaces, "jetserve") {
		t.Errorf("namespace %q, namespaces %v; want jetserve, created by namespace.yaml", k.Namespace, m.namespaces)
	}
	for name, opts := range services {
		d := m.deployments["jetserve-"+name]
		if d == nil {
			t.Errorf("no Deployment jetserve-%s", name)
			continue
		}
		where := "Deployment " + d.Name
		podLabels := d.Spec.Template.Labels
		if !selects(d.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("%s: selector %v does not select its pods %v", where, d.Spec.Selector.MatchLabels, podLabels)
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("%s: replicas %v, want ≥ 2 (a PDB with minAvailable 1 needs a spare)", where, d.Spec.Replicas)
		}
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", where, len(d.Spec.Template.Spec.Containers))
		}
		c := d.Spec.Template.Spec.Containers[0]
		if img := "jetserve/" + name; !strings.HasPrefix(c.Image, img+":") || !slices.ContainsFunc(k.Images, func(i struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		}) bool {
			return i.Name == img
		}) {
			t.Errorf("%s: image %q, want %s:<tag> with an images entry in kustomization.yaml", where, c.Image, img)
		}
		// The env, as the binary reads it (fieldRef values stand in as text).
		var env []string
		for _, e := range c.Env {
			if !strings.HasPrefix(e.Name, "JETSERVE_") {
				t.Errorf("%s: env %s is not a jetserve option", where, e.Name)
			}
			v := e.Value
			if e.ValueFrom != nil {
				if e.ValueFrom.FieldRef == nil {
					t.Errorf("%s: env %s: only fieldRef sources are expected", where, e.Name)
				}
				v = "pod-name"
			}
			env = append(env, e.Name+"="+v)
		}
		common, ports, err := opts.load(env)
		if err != nil {
			t.Errorf("%s: its env is refused by jetserve-%s: %v", where, name, err)
			continue
		}
		if common.NATS.Replicas != 3 {
			t.Errorf("%s: nats.replicas %d, want 3 (the NATS chart runs a 3-node JetStream cluster)", where, common.NATS.Replicas)
		}
		if !strings.Contains(common.NATS.URL, "nats.jetserve.svc") {
			t.Errorf("%s: nats.url %q, want the chart's service nats.jetserve.svc", where, common.NATS.URL)
		}
		declared := map[string]int32{}
		for _, p := range c.Ports {
			declared[p.Name] = p.ContainerPort
		}
		for pname, addr := range ports {
			if got, want := declared[pname], portOf(t, addr); got != want {
				t.Errorf("%s: container port %q = %d, want %d (the service's option)", where, pname, got, want)
			}
		}
		if len(declared) != len(ports) {
			t.Errorf("%s: ports %v, want exactly %v", where, declared, ports)
		}
		for pname, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != "/healthz" ||
				!samePort(probe.HTTPGet.Port, "ops", declared["ops"]) {
				t.Errorf("%s: %s probe %+v, want GET /healthz on the ops port", where, pname, probe)
			}
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			if req.IsZero() || lim.IsZero() || lim.Cmp(req) < 0 {
				t.Errorf("%s: %s request %v, limit %v; want both set, limit ≥ request", where, r, req.String(), lim.String())
			}
		}
		if ann := d.Spec.Template.Annotations["prometheus.io/port"]; ann != strconv.Itoa(int(declared["ops"])) {
			t.Errorf("%s: prometheus.io/port %q, want the ops port %d", where, ann, declared["ops"])
		}
		pdb := m.pdbs["jetserve-"+name]
		if pdb == nil || pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, podLabels) ||
			(pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Errorf("%s: PodDisruptionBudget %+v, want one selecting its pods with minAvailable or maxUnavailable", where, pdb)
		}
		if name == "worker" {
			wc := worker.DefaultConfig()
			if err := service.Load(&wc, "worker", nil, env, io.Discard); err != nil {
				t.Fatal(err)
			}
			if lim := c.Resources.Limits[corev1.ResourceCPU]; lim.AsApproximateFloat64() != wc.Resources.CPU {
				t.Errorf("%s: resources.cpu %v, want the container's CPU limit %s (the scheduler places by it)", where, wc.Resources.CPU, lim.String())
			}
		}
	}
	// Services expose the public ports of the pods they select.
	for name, s := range m.services {
		var pod *appsv1.Deployment
		for _, d := range m.deployments {
			if selects(s.Spec.Selector, d.Spec.Template.Labels) {
				pod = d
			}
		}
		if pod == nil {
			t.Errorf("Service %s selects no Deployment's pods (%v)", name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			found := false
			for _, cp := range pod.Spec.Template.Spec.Containers[0].Ports {
				found = found || samePort(p.TargetPort, cp.Name, cp.ContainerPort) && p.Port == cp.ContainerPort
			}
			if !found {
				t.Errorf("Service %s port %s (%d → %s) matches no container port of %s", name, p.Name, p.Port, p.TargetPort.String(), pod.Name)
			}
		}
	}
	for _, want := range []string{"jetserve-ingress", "jetserve-scheduler"} {
		if m.services[want] == nil {
			t.Errorf("no Service %s", want)
		}
	}
	checkScaledObject(t, m)
}

func checkScaledObject(t *testing.T, m manifests) {
	t.Helper()
	so := m.scaled["jetserve-worker"]
	if so == nil {
		t.Fatal("no ScaledObject jetserve-worker")
	}
	ref := so.Spec.ScaleTargetRef
	if ref == nil || ref.Kind != "Deployment" || m.deployments[ref.Name] == nil || ref.Name != "jetserve-worker" {
		t.Errorf("ScaledObject target %+v, want the Deployment jetserve-worker", ref)
	}
	names, _ := protocol.NewNames(protocol.DefaultPrefix)
	jn := jobs.Names{Names: names}
	var sawJobs, sawProm bool
	for i, tr := range so.Spec.Triggers {
		if _, ok := tr.Metadata["metricType"]; ok {
			t.Errorf("trigger %d (%s): metricType inside metadata, where KEDA ignores it; it is a field of the trigger", i, tr.Type)
		}
		switch tr.Type {
		case "nats-jetstream":
			sawJobs = true
			if got, want := tr.Metadata["stream"], jn.Stream("text", "train"); got != want {
				t.Errorf("nats-jetstream stream %q, want %q (pkg/jobs names the example's text/train so)", got, want)
			}
			if tr.Metadata["consumer"] != jobs.Consumer {
				t.Errorf("nats-jetstream consumer %q, want %q", tr.Metadata["consumer"], jobs.Consumer)
			}
			if ep := tr.Metadata["natsServerMonitoringEndpoint"]; !strings.HasSuffix(ep, ":8222") {
				t.Errorf("natsServerMonitoringEndpoint %q, want the monitoring port 8222 (nats-values.yaml)", ep)
			}
		case "prometheus":
			sawProm = true
			if !strings.Contains(tr.Metadata["query"], "jetserve_autoscaler_desired_workers") {
				t.Errorf("prometheus trigger query %q, want jetserve_autoscaler_desired_workers", tr.Metadata["query"])
			}
		default:
			t.Errorf("trigger %d: unexpected type %q", i, tr.Type)
		}
		if tr.MetricType != "" && tr.MetricType != "Value" && tr.MetricType != "AverageValue" && tr.MetricType != "Utilization" {
			t.Errorf("trigger %d metricType %q, want Value, AverageValue or Utilization", i, tr.MetricType)
		}
	}
	if !sawJobs || !sawProm {
		t.Errorf("triggers: jobs lag %v, desired workers %v; want both", sawJobs, sawProm)
	}
	// deploy/keda-scaledobject.yaml is the same object.
	b, err := os.ReadFile("../keda-scaledobject.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var top ScaledObject
	strict(t, "deploy/keda-scaledobject.yaml", b, &top)
	a, _ := yaml.Marshal(top)
	c, _ := yaml.Marshal(so)
	if !bytes.Equal(a, c) {
		t.Errorf("deploy/keda-scaledobject.yaml differs from deploy/k8s/keda-scaledobject.yaml:\n%s\nvs\n%s", a, c)
	}
}

// natsValues is the part of the official NATS chart's values the file
// sets (decoded strictly, so a misspelt key is an error).
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
			Merge    struct {
				// The chart turns a key ending in $include into an
				// include directive, keys in sorted order: zzz sorts
				// after the chart's routes.
				IncludeLast string `json:"zzz$include"`
			} `json:"merge"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				PVC struct {
					Size string `json:"size"`
				} `json:"pvc"`
			} `json:"fileStore"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge struct {
			MaxPayload int64  `json:"max_payload"`
			Include    string `json:"$include"`
		} `json:"merge"`
	} `json:"config"`
	Container struct {
		Merge struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"merge"`
		Patch []jsonPatchOp `json:"patch"`
	} `json:"container"`
	PodTemplate struct {
		Patch []jsonPatchOp `json:"patch"`
	} `json:"podTemplate"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
	NatsBox struct {
		Enabled  bool `json:"enabled"`
		Contexts map[string]struct {
			Creds struct {
				SecretName string `json:"secretName"`
				Key        string `json:"key"`
			} `json:"creds"`
		} `json:"contexts"`
	} `json:"natsBox"`
}

// jsonPatchOp is one operation of a chart value's JSON Patch; its value is
// decoded strictly by the test into the Kubernetes type the path names.
type jsonPatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

func loadNATSValues(t *testing.T) natsValues {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	strict(t, "nats-values.yaml", b, &v)
	return v
}

func TestNATSChartValues(t *testing.T) {
	v := loadNATSValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || c.JetStream.FileStore.PVC.Size == "" {
		t.Errorf("nats-values.yaml config %+v, want a 3-node cluster with JetStream on a file store PVC", c)
	}
	if !c.Monitor.Enabled || c.Monitor.Port != 8222 {
		t.Errorf("monitor %+v, want enabled on 8222 (KEDA reads /jsz there)", c.Monitor)
	}
	// Larger bodies go through the bodies object store; job, graph and
	// OIP bodies travel in one message: 8 MiB keeps those as roomy as
	// before max_body_bytes outgrew a message.
	if c.Merge.MaxPayload < 8<<20 {
		t.Errorf("max_payload %d, want ≥ 8 MiB (what jobs, graphs and OIP requests carry inline)", c.Merge.MaxPayload)
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func samePort(p intstr.IntOrString, name string, num int32) bool {
	if p.Type == intstr.String {
		return p.StrVal == name
	}
	return p.IntVal == num
}

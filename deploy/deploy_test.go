// Package deploy_test checks the deployment files: the Kubernetes
// manifests decode strictly against the Kubernetes and prometheus-operator
// API types (an unknown or misspelt field fails), the Prometheus
// configuration passes promtool, keep their safety settings, and every probed flag
// they pass, like the systemd unit's, is one probed knows.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// probedFlags lists the long flags of probed --help.
func probedFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("go", "-C", "..", "run", "./cmd/probed", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("probed --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z][a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	return flags
}

func checkFlags(t *testing.T, where string, args []string, known map[string]bool) {
	t.Helper()
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !known[name] {
			t.Errorf("%s: %q is not a probed flag", where, a)
		}
	}
}

func TestKubernetes(t *testing.T) {
	data, err := os.ReadFile("kubernetes/netprobe.yaml")
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	kinds := map[string]int{}
	var (
		ds  *appsv1.DaemonSet
		svc *corev1.Service
		np  *networkingv1.NetworkPolicy
	)
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		kinds[gvk.Kind]++
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			ds = o
		case *corev1.Service:
			svc = o
		case *networkingv1.NetworkPolicy:
			np = o
		}
		if svc, ok := obj.(*corev1.Service); ok && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("Service %s is not headless: dns:/// discovery needs every pod's address", svc.Name)
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service", "NetworkPolicy"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s objects, want 1", kinds[k], k)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	pod := ds.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the pod may run as root")
	}
	// ICMP echoes need datagram ICMP sockets for the pod's group, as no
	// capability is left for a raw one.
	if psc := pod.SecurityContext; psc == nil || psc.RunAsGroup == nil ||
		!slices.Contains(psc.Sysctls, corev1.Sysctl{Name: "net.ipv4.ping_group_range", Value: fmt.Sprintf("%d %d", *psc.RunAsGroup, *psc.RunAsGroup)}) {
		t.Error("net.ipv4.ping_group_range does not allow the pod's group ICMP datagram sockets")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("the root filesystem is writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation is allowed")
	case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL":
		t.Error("capabilities are not all dropped")
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() {
		t.Error("no CPU or memory limit")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Error("readiness is not wired to probed's health (/healthz)")
	}
	checkFlags(t, "DaemonSet args", c.Args, probedFlags(t))
	checkFleet(t, pod, svc, np)
	// docs/fleet.md quotes the manifest's fleet settings: they must be
	// there, as quoted.
	doc, err := os.ReadFile("../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "## Kubernetes")
	blocks := strings.Split(rest, "```yaml\n")[1:]
	if len(blocks) < 2 {
		t.Errorf("docs/fleet.md's Kubernetes section quotes %d blocks of the manifest, want its env and its flags", len(blocks))
	}
	for _, block := range blocks {
		quoted, _, _ := strings.Cut(block, "```")
		if !strings.Contains(string(data), quoted) {
			t.Errorf("docs/fleet.md quotes what netprobe.yaml does not hold:\n%s", quoted)
		}
	}
}

// checkFleet checks the DaemonSet makes its pods one fleet: each named by
// its Kubernetes node (the downward API), its peers the pods of the
// headless Service, reached with a peer token mounted from a Secret, the
// token's name listed as a peer, and the NetworkPolicy letting the pods
// reach each other's gRPC port.
func checkFleet(t *testing.T, pod corev1.PodSpec, svc *corev1.Service, np *networkingv1.NetworkPolicy) {
	t.Helper()
	c := pod.Containers[0]
	flag := func(name string) string {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	if flag("node-name") != "$(NODE_NAME)" || len(c.Env) == 0 || c.Env[0].Name != "NODE_NAME" ||
		c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("--node-name is not the Kubernetes node's name, NODE_NAME from the downward API's spec.nodeName")
	}
	if svc == nil || len(svc.Spec.Ports) == 0 {
		t.Fatal("no Service with ports")
	}
	want := fmt.Sprintf("dns:///%s.%s.svc.cluster.local:%d", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)
	if got := flag("peers"); got != want {
		t.Errorf("--peers=%s, want the headless Service's pods, %s", got, want)
	}
	if flag("peer") == "" || flag("peer-ca-file") == "" {
		t.Error("no --peer naming the nodes' own caller, or no --peer-ca-file: the nodes do not trust each other")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if dir := filepath.Dir(flag("peer-token-file")); m.MountPath == dir {
			for _, v := range pod.Volumes {
				mounted = mounted || v.Name == m.Name && v.Secret != nil
			}
		}
	}
	if !mounted {
		t.Errorf("--peer-token-file=%s is not in a Secret mounted there", flag("peer-token-file"))
	}
	reach := false
	for _, rule := range np.Spec.Ingress {
		for _, from := range rule.From {
			if from.PodSelector == nil || from.NamespaceSelector != nil || from.PodSelector.MatchLabels["app.kubernetes.io/name"] != "probed" {
				continue
			}
			for _, p := range rule.Ports {
				reach = reach || p.Port != nil && p.Port.IntValue() == 7070
			}
		}
	}
	if !reach {
		t.Error("the NetworkPolicy does not let the probed pods reach each other's gRPC port")
	}
}

func TestSystemd(t *testing.T) {
	data, err := os.ReadFile("systemd/probed.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(data), "\\\n", " ")
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("no ExecStart")
	}
	checkFlags(t, "ExecStart", strings.Fields(m[2]), probedFlags(t))
	for _, want := range []string{"User=probed", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
}

// TestPrometheusOperator decodes the Probe and ScrapeConfig strictly
// against prometheus-operator's API types, and checks that they scrape
// probed's /probe where netprobe.yaml serves it.
func TestPrometheusOperator(t *testing.T) {
	data, err := os.ReadFile("kubernetes/prometheus-operator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{monitoringv1.AddToScheme, monitoringv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var probes, scrapes int
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		switch o := obj.(type) {
		case *monitoringv1.Probe:
			probes++
			if o.Spec.ProberSpec.URL != "probed.netprobe.svc:7071" || o.Spec.ProberSpec.Path != "/probe" || o.Spec.Module != "tcp_connect" {
				t.Errorf("Probe %s: prober %+v, module %q", o.Name, o.Spec.ProberSpec, o.Spec.Module)
			}
			if o.Spec.Targets.StaticConfig == nil || len(o.Spec.Targets.StaticConfig.Targets) == 0 {
				t.Errorf("Probe %s has no targets", o.Name)
			}
			// The DaemonSet runs with --tokens-file: a scrape needs one.
			if a := o.Spec.Authorization; a == nil || a.Type != "Bearer" || a.Credentials == nil {
				t.Errorf("Probe %s sends no bearer token: %+v", o.Name, a)
			}
		case *monitoringv1alpha1.ScrapeConfig:
			scrapes++
			if o.Spec.MetricsPath == nil || *o.Spec.MetricsPath != "/probe" || len(o.Spec.Params["target"]) != 1 || len(o.Spec.Params["module"]) != 1 {
				t.Errorf("ScrapeConfig %s: path %v, params %v", o.Name, o.Spec.MetricsPath, o.Spec.Params)
			}
			if len(o.Spec.KubernetesSDConfigs) != 1 || o.Spec.KubernetesSDConfigs[0].Role != monitoringv1alpha1.KubernetesRolePod {
				t.Errorf("ScrapeConfig %s does not find probed's pods", o.Name)
			}
			if a := o.Spec.Authorization; a == nil || a.Type != "Bearer" || a.Credentials == nil {
				t.Errorf("ScrapeConfig %s sends no bearer token: %+v", o.Name, a)
			}
		default:
			t.Errorf("document %d is a %T", i, obj)
		}
	}
	if probes != 1 || scrapes != 1 {
		t.Errorf("%d Probes and %d ScrapeConfigs, want one of each", probes, scrapes)
	}
}

// TestPrometheusConfig checks the plain Prometheus configuration with
// promtool, as Prometheus would load it.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus), and CI=true forbids skipping")
		}
		t.Skip("promtool is not installed: apt-get install prometheus (Debian's package)")
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", "prometheus/prometheus.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool: %v\n%s", err, out)
	}
}

// TestImage checks the Kubernetes manifest against the image built by
// deploy/image/build, named by NETPROBE_IMAGE (CI sets it): the manifest
// runs that image, as its user, and its args are probed's, the image's
// entrypoint.
func TestImage(t *testing.T) {
	image := os.Getenv("NETPROBE_IMAGE")
	if image == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("NETPROBE_IMAGE is not set, and CI=true forbids skipping: .ci/run builds the image first")
		}
		t.Skip("no image: build one with deploy/image/build and set NETPROBE_IMAGE to it")
	}
	out, err := exec.Command("podman", "image", "inspect", image).Output()
	if err != nil {
		t.Fatalf("podman image inspect %s: %v", image, err)
	}
	var inspected []struct {
		RepoTags []string
		Config   struct {
			User       string
			Entrypoint []string
		}
	}
	if err := json.Unmarshal(out, &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	img := inspected[0]

	data, err := os.ReadFile("kubernetes/netprobe.yaml")
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	var ds *appsv1.DaemonSet
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if obj, _, err := decoder.Decode(doc, nil, nil); err == nil {
			if d, ok := obj.(*appsv1.DaemonSet); ok {
				ds = d
			}
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet in netprobe.yaml")
	}
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Contains(img.RepoTags, c.Image) {
		t.Errorf("the DaemonSet runs %s; the image built is tagged %q", c.Image, img.RepoTags)
	}
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil || fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup) != img.Config.User {
		t.Errorf("the pod runs as %v; the image's user is %s", sc, img.Config.User)
	}
	if strings.Join(img.Config.Entrypoint, " ") != "/probed" || len(c.Command) != 0 {
		t.Errorf("the image's entrypoint is %q and the container's command %q: the args are probed's only with /probed", img.Config.Entrypoint, c.Command)
	}
	checkFlags(t, "DaemonSet args", c.Args, probedFlags(t))
}

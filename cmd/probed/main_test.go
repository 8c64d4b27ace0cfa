package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The binaries built for these tests: probed, and grpcurl at the version
// pinned in tools/go.mod.
var probedBin, grpcurlBin string

// update has the tests that generate docs (the fault matrix's table, the
// flag tables) rewrite them instead of checking them.
var update = flag.Bool("update", false, "rewrite the generated docs instead of checking them")

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "probed-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	probedBin, err = probetest.GoBuild(dir, "github.com/netprobe/netprobe/cmd/probed")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	grpcurlBin, err = probetest.GoBuild(dir, "github.com/fullstorydev/grpcurl/cmd/grpcurl", "-modfile=../../tools/go.mod")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestServeAndDrain runs the real binary: reflection lists the services,
// health says SERVING, a probe works, and SIGTERM flips health to
// NOT_SERVING and exits 0.
func TestServeAndDrain(t *testing.T) {
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0"))
	conn := dial(t, p.Addr)
	ctx := probetest.Context(t)

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"netprobe.v1.ProbeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	refl.CloseSend()

	health := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "netprobe.v1.ProbeService"} {
		hr, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, %v; want SERVING", svc, hr, err)
		}
	}

	// SIGHUP, as systemd's reload sends it, reloads what there is (here
	// nothing) and does not end probed.
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("nothing to reload") {
		t.Fatalf("no reload logged after SIGHUP (exited: %v)", len(p.Exited) > 0)
	}

	tg, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	cr, err := netprobev1.NewProbeServiceClient(conn).Connect(ctx, &netprobev1.ConnectRequest{
		Target: &netprobev1.Target{Host: "127.0.0.1", Port: uint32(tg.Addr().(*net.TCPAddr).Port)}})
	if err != nil || cr.Error != nil || cr.PeerAddress != tg.Addr().String() {
		t.Fatalf("Connect = %v, %v", cr, err)
	}

	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: "netprobe.v1.ProbeService"})
	if err != nil {
		t.Fatal(err)
	}
	if hr, err := watch.Recv(); err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v; want SERVING", hr, err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if hr, err := watch.Recv(); err != nil || hr.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after SIGTERM, watch = %v, %v; want NOT_SERVING", hr, err)
	}
	select {
	case err := <-p.Exited:
		if err != nil {
			t.Errorf("probed exited with %v, want 0", err)
		}
	case <-time.After(probetest.Timeout):
		t.Fatal("probed did not exit after SIGTERM")
	}
}

// TestHelp reads probed --help as a new user would: it names every RPC,
// says how files reload, and lists each group of flags.
func TestHelp(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(probetest.Context(t), probedBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("probed --help: %v\n%s", err, out)
	}
	for _, want := range []string{
		"netprobe.v1.ProbeService (Connect, Fetch, ResolveService, Sweep, Describe)",
		"on SIGHUP and on POST /-/reload",
		"Serving:", "Target policy:", "Probing:", "Limits:", "Fleet:", "Prometheus:", "Logging:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("probed --help lacks %q:\n%s", want, out)
		}
	}
}

// TestGCHeapFloorBounds checks that a --gc-heap-floor that would do
// nothing (under Go's own 4 MiB) or is past 1 GiB, a typo's size, is
// refused before probed serves, by flag and by its environment twin.
func TestGCHeapFloorBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{"under 4 MiB", []string{"--gc-heap-floor=1"}, ""},
		{"one byte under 4 MiB", []string{"--gc-heap-floor=4194303"}, ""},
		{"over 1 GiB", []string{"--gc-heap-floor=1073741825"}, ""},
		{"the largest number", []string{"--gc-heap-floor=18446744073709551615"}, ""},
		{"over 1 GiB from the environment", nil, "18446744073709551615"},
		{"a suffix", []string{"--gc-heap-floor=16MiB"}, ""},
		{"negative", []string{"--gc-heap-floor=-1"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(name string) string {
				if name == "NETPROBE_GC_HEAP_FLOOR" {
					return tc.env
				}
				return ""
			}
			var stdout, stderr strings.Builder
			args := append([]string{"--listen=127.0.0.1:0", "--metrics-addr="}, tc.args...)
			code := command(probetest.Context(t), args, getenv, &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), "gc-heap-floor") && !strings.Contains(stderr.String(), "GC_HEAP_FLOOR") {
				t.Errorf("exit %d, stderr %q; want 2 and the flag named", code, stderr.String())
			}
		})
	}
}

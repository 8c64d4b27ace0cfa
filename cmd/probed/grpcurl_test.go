package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/probetest"
)

// grpcurl runs the pinned grpcurl, plaintext and with errors as JSON, and
// returns its stdout, stderr and exit code.
func grpcurl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(probetest.Context(t), grpcurlBin, append([]string{"-plaintext", "-format-error"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("grpcurl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// decodeAll reads a stream of JSON objects (grpcurl prints one per
// response) into messages made by next.
func decodeAll(t *testing.T, out string, next func() proto.Message) int {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	n := 0
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("response %d: %v in %q", n+1, err, out)
		}
		if err := protojson.Unmarshal(raw, next()); err != nil {
			t.Fatalf("response %d %s: %v", n+1, raw, err)
		}
		n++
	}
}

// TestGrpcurl drives every RPC through grpcurl and reflection, as a user
// with no proto files would: list, describe, each call with JSON in and
// out, a probe that fails and a call that is refused.
func TestGrpcurl(t *testing.T) {
	dns := dnstest.Start(t)
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--dns-server="+dns.Addr))
	echo := probetest.Listen(t, "127.0.0.1:0", probetest.Echo)
	closed := probetest.ClosedPort(t, "tcp", "127.0.0.1:0")

	t.Run("list", func(t *testing.T) {
		out, errOut, code := grpcurl(t, p.Addr, "list")
		services := strings.Fields(out)
		for _, want := range []string{"netprobe.v1.ProbeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
			if code != 0 || !slices.Contains(services, want) {
				t.Errorf("list: exit %d, %q (stderr %q), missing %s", code, out, errOut, want)
			}
		}
		out, _, code = grpcurl(t, p.Addr, "list", "netprobe.v1.ProbeService")
		want := []string{"netprobe.v1.ProbeService.Connect", "netprobe.v1.ProbeService.Describe", "netprobe.v1.ProbeService.Fetch", "netprobe.v1.ProbeService.ResolveService", "netprobe.v1.ProbeService.Sweep"}
		if got := strings.Fields(out); code != 0 || !cmp.Equal(got, want) {
			t.Errorf("list netprobe.v1.ProbeService: exit %d, %q; want %q", code, got, want)
		}
	})

	t.Run("describe", func(t *testing.T) {
		out, _, code := grpcurl(t, p.Addr, "describe", "netprobe.v1.ProbeService")
		for _, want := range []string{
			"rpc Connect ( .netprobe.v1.ConnectRequest ) returns ( .netprobe.v1.ConnectResponse );",
			"rpc Fetch ( .netprobe.v1.FetchRequest ) returns ( stream .netprobe.v1.FetchResponse );",
			"rpc ResolveService ( .netprobe.v1.ResolveServiceRequest ) returns ( .netprobe.v1.ResolveServiceResponse );",
			"rpc Sweep ( .netprobe.v1.SweepRequest ) returns ( stream .netprobe.v1.SweepResponse );",
		} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("describe: exit %d, missing %q in\n%s", code, want, out)
			}
		}
		out, _, code = grpcurl(t, p.Addr, "describe", "netprobe.v1.ProbeError")
		if code != 0 || !strings.Contains(out, ".netprobe.v1.Stage stage = 1;") || !strings.Contains(out, ".netprobe.v1.Reason reason = 2;") {
			t.Errorf("describe netprobe.v1.ProbeError: exit %d\n%s", code, out)
		}
	})

	t.Run("Connect", func(t *testing.T) {
		req := fmt.Sprintf(`{"target":{"host":"127.0.0.1","port":%d}}`, echo.Port())
		out, errOut, code := grpcurl(t, "-d", req, p.Addr, "netprobe.v1.ProbeService/Connect")
		var resp netprobev1.ConnectResponse
		if n := decodeAll(t, out, func() proto.Message { return &resp }); code != 0 || n != 1 || resp.GetPeerAddress() != echo.Addr() || resp.GetError() != nil {
			t.Errorf("Connect: exit %d, %d responses, %v (stderr %q)", code, n, &resp, errOut)
		}
	})

	t.Run("Connect fails", func(t *testing.T) {
		req := fmt.Sprintf(`{"target":{"host":"127.0.0.1","port":%d}}`, closed)
		out, _, code := grpcurl(t, "-d", req, p.Addr, "netprobe.v1.ProbeService/Connect")
		var resp netprobev1.ConnectResponse
		decodeAll(t, out, func() proto.Message { return &resp })
		want := &netprobev1.ProbeError{
			Stage:   netprobev1.Stage_STAGE_CONNECT,
			Reason:  netprobev1.Reason_REASON_REFUSED,
			Errno:   "ECONNREFUSED",
			Address: fmt.Sprintf("127.0.0.1:%d", closed),
		}
		got := resp.GetError()
		if code != 0 || got.GetStage() != want.Stage || got.GetReason() != want.Reason || got.GetErrno() != want.Errno || got.GetAddress() != want.Address {
			t.Errorf("Connect to a closed port: exit %d, error %v; want an OK call with %v", code, got, want)
		}
		// The JSON names enums, as scripts match them.
		if !strings.Contains(out, `"stage": "STAGE_CONNECT"`) || !strings.Contains(out, `"reason": "REASON_REFUSED"`) {
			t.Errorf("the JSON does not name the stage and reason:\n%s", out)
		}
	})

	t.Run("Fetch", func(t *testing.T) {
		req := fmt.Sprintf(`{"target":{"host":"127.0.0.1","port":%d},"payload":"cGluZwo="}`, echo.Port())
		out, errOut, code := grpcurl(t, "-d", req, p.Addr, "netprobe.v1.ProbeService/Fetch")
		var events []*netprobev1.FetchResponse
		decodeAll(t, out, func() proto.Message {
			events = append(events, &netprobev1.FetchResponse{})
			return events[len(events)-1]
		})
		if code != 0 || len(events) != 3 ||
			events[0].GetConnect().GetPeerAddress() != echo.Addr() ||
			string(events[1].GetData().GetData()) != "ping\n" ||
			events[2].GetSummary().GetEndReason() != netprobev1.EndReason_END_REASON_EOF {
			t.Errorf("Fetch: exit %d, events %v (stderr %q)", code, events, errOut)
		}
	})

	t.Run("Fetch steps", func(t *testing.T) {
		// An SMTP-like greeting: a banner, one reply to one line, then close.
		smtp := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			defer c.Close()
			fmt.Fprint(c, "220 ready\r\n")
			if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				fmt.Fprint(c, "250 ok\r\n")
			}
		})
		helo := base64.StdEncoding.EncodeToString([]byte("HELO probe\r\n"))
		for _, tc := range []struct {
			name, steps string
			end         netprobev1.EndReason
			stage       netprobev1.Stage
			reason      netprobev1.Reason
			step        uint32
			quoted      string
		}{
			{"matched", `[{"expect":"^220 "},{"send":"` + helo + `"},{"expect":"^250 "}]`, netprobev1.EndReason_END_REASON_MATCHED, 0, 0, 0, ""},
			{"no match", `[{"send":"` + helo + `"},{"expect":"^554 "}]`, netprobev1.EndReason_END_REASON_ERROR, netprobev1.Stage_STAGE_EXPECT, netprobev1.Reason_REASON_NO_MATCH, 1, "250 ok"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req := fmt.Sprintf(`{"target":{"host":"127.0.0.1","port":%d},"steps":%s}`, smtp.Port(), tc.steps)
				out, errOut, code := grpcurl(t, "-d", req, p.Addr, "netprobe.v1.ProbeService/Fetch")
				var events []*netprobev1.FetchResponse
				decodeAll(t, out, func() proto.Message {
					events = append(events, &netprobev1.FetchResponse{})
					return events[len(events)-1]
				})
				if code != 0 || len(events) < 2 {
					t.Fatalf("exit %d, events %v (stderr %q)", code, events, errOut)
				}
				sum := events[len(events)-1].GetSummary()
				e := sum.GetError()
				if sum.GetEndReason() != tc.end || e.GetStage() != tc.stage || e.GetReason() != tc.reason || e.GetStep() != tc.step || !strings.Contains(e.GetMessage(), tc.quoted) {
					t.Errorf("summary %v; want end %v, error %v/%v at step %d quoting %q", sum, tc.end, tc.stage, tc.reason, tc.step, tc.quoted)
				}
			})
		}
	})

	t.Run("Sweep", func(t *testing.T) {
		req := fmt.Sprintf(`{"targets":[{"target":{"host":"127.0.0.1","port":%d}},{"target":{"host":"127.0.0.1","port":%d}}]}`, echo.Port(), closed)
		out, errOut, code := grpcurl(t, "-d", req, p.Addr, "netprobe.v1.ProbeService/Sweep")
		var results []*netprobev1.SweepResponse
		decodeAll(t, out, func() proto.Message {
			results = append(results, &netprobev1.SweepResponse{})
			return results[len(results)-1]
		})
		outcomes := map[uint32]netprobev1.Reason{}
		for _, r := range results {
			outcomes[r.GetIndex()] = r.GetConnect().GetError().GetReason()
		}
		if code != 0 || len(results) != 2 || outcomes[0] != netprobev1.Reason_REASON_UNSPECIFIED || outcomes[1] != netprobev1.Reason_REASON_REFUSED {
			t.Errorf("Sweep: exit %d, results %v (stderr %q)", code, results, errOut)
		}
	})

	t.Run("Describe", func(t *testing.T) {
		out, _, code := grpcurl(t, p.Addr, "netprobe.v1.ProbeService/Describe")
		var resp netprobev1.DescribeResponse
		decodeAll(t, out, func() proto.Message { return &resp })
		host, _ := os.Hostname()
		if code != 0 || resp.GetNode() != host || len(resp.GetInstance()) != 16 || resp.GetMaxTimeout().AsDuration() != time.Minute || resp.GetMaxFanout() != 0 {
			t.Errorf("Describe: exit %d, %v; want node %s, no fan-out", code, &resp, host)
		}
	})

	t.Run("ResolveService", func(t *testing.T) {
		out, _, code := grpcurl(t, "-d", `{"port":53,"protocol":"udp"}`, p.Addr, "netprobe.v1.ProbeService/ResolveService")
		var resp netprobev1.ResolveServiceResponse
		decodeAll(t, out, func() proto.Message { return &resp })
		if code != 0 || resp.GetName() != "domain" || resp.GetPort() != 53 || resp.GetProtocol() != "udp" {
			t.Errorf("ResolveService: exit %d, %v", code, &resp)
		}
	})

	t.Run("health", func(t *testing.T) {
		out, _, code := grpcurl(t, "-d", `{"service":"netprobe.v1.ProbeService"}`, p.Addr, "grpc.health.v1.Health/Check")
		var resp healthpb.HealthCheckResponse
		decodeAll(t, out, func() proto.Message { return &resp })
		if code != 0 || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: exit %d, %v", code, &resp)
		}
	})

	t.Run("refused call", func(t *testing.T) {
		out, errOut, code := grpcurl(t, "-d", `{"target":{"host":"bad host"}}`, p.Addr, "netprobe.v1.ProbeService/Connect")
		// grpcurl exits 64 plus the status code.
		if code != 64+int(codes.InvalidArgument) || out != "" {
			t.Fatalf("exit %d, stdout %q; want %d and nothing", code, out, 64+int(codes.InvalidArgument))
		}
		var st statuspb.Status
		decodeAll(t, errOut, func() proto.Message { return &st })
		var fields []string
		for _, d := range st.GetDetails() {
			var br errdetails.BadRequest
			if err := d.UnmarshalTo(&br); err != nil {
				t.Fatalf("detail %v: %v", d, err)
			}
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
		if codes.Code(st.GetCode()) != codes.InvalidArgument || !cmp.Equal(fields, []string{"target.host", "target.port"}) {
			t.Errorf("status %v; want INVALID_ARGUMENT naming target.host and target.port", &st)
		}
	})

	// Connect, Fetch and Sweep reached the echo target; the refused call
	// did not.
	for range 3 {
		select {
		case <-echo.Accepted:
		case <-time.After(probetest.Timeout):
			t.Fatal("the echo target accepted fewer than 3 connections")
		}
	}
	if !echo.AcceptedNothing() {
		t.Error("the echo target accepted a fourth connection: the refused call dialled")
	}
}

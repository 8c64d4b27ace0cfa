package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// TestDeployingRecipe runs docs/deploying.md's openssl lines, as they are,
// in an empty directory, then serves with what they made: a client that
// trusts ca.pem and shows the token is answered.
func TestDeployingRecipe(t *testing.T) {
	t.Parallel()
	probetest.Program(t, "openssl", "apt-get install openssl")
	doc, err := os.ReadFile("../../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "Without a CA of your own, openssl makes one")
	if ok {
		_, rest, ok = strings.Cut(rest, "```sh\n")
	}
	recipe, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatal("deploying.md has no openssl recipe")
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(probetest.Context(t), "bash", "-euo", "pipefail", "-c", recipe)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the recipe: %v\n%s", err, out)
	}
	line, err := os.ReadFile(filepath.Join(dir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	name, token, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
	if name != "ops" || len(token) != 48 {
		t.Fatalf("the tokens file holds %q", line)
	}
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
		"--tls-cert="+filepath.Join(dir, "tls.crt"), "--tls-key="+filepath.Join(dir, "tls.key"), "--tokens-file="+filepath.Join(dir, "tokens")))
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("ca.pem holds no certificate")
	}
	c, err := client.Dial(p.Addr, client.WithTLS(&tls.Config{RootCAs: roots}), client.WithBearerToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.Health(probetest.Context(t)); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health with the recipe's CA: %v, %v", st, err)
	}
	if _, err := c.ResolveService(probetest.Context(t), "tcp", "https"); err != nil {
		t.Errorf("a call with the recipe's token: %v", err)
	}
}

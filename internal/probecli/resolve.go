package probecli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
)

func (a *app) resolveCommand() *cobra.Command {
	var port uint16
	cmd := &cobra.Command{
		Use:   "resolve SERVICE [PROTOCOL] | resolve --port N [PROTOCOL]",
		Short: "Look a service name or port up in the server's services database",
		Long: `resolve looks a service up the way getservbyname and getservbyport do, in the
probe server's services database (its /etc/services, then a built-in table).
PROTOCOL is tcp (the default) or udp.`,
		Example: `  probe resolve https
  probe resolve domain udp
  probe resolve --port 443`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case cmd.Flags().Changed("port") && port == 0:
				return fmt.Errorf("--port 0: want 1-65535")
			case cmd.Flags().Changed("port") && len(args) > 1:
				return fmt.Errorf("with --port, only PROTOCOL may follow, got %d arguments", len(args))
			case !cmd.Flags().Changed("port") && (len(args) < 1 || len(args) > 2):
				return fmt.Errorf("want SERVICE [PROTOCOL] or --port N [PROTOCOL], got %d arguments", len(args))
			}
			protocol := protocolArg(args, 1)
			if cmd.Flags().Changed("port") {
				protocol = protocolArg(args, 0)
			} else if err := checkUTF8("SERVICE", args[0]); err != nil {
				return err
			}
			if p := strings.ToLower(protocol); p != "" && p != "tcp" && p != "udp" {
				return fmt.Errorf("PROTOCOL %q: want tcp or udp", protocol)
			}
			// A number is a port, which --port looks up: say so, with the
			// command to type.
			if n, err := strconv.ParseUint(protocolArg(args, 0), 10, 64); err == nil && !cmd.Flags().Changed("port") {
				if n == 0 || n > 65535 {
					return fmt.Errorf("SERVICE %q is a number, and out of the ports' range 1-65535", args[0])
				}
				return fmt.Errorf("SERVICE %q is a port number: to look port %d up, run %s", args[0], n, strings.TrimSpace(fmt.Sprintf("probe resolve --port %d %s", n, protocol)))
			}
			return nil
		},
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			var (
				svc *client.Service
				err error
			)
			if port != 0 {
				svc, err = c.ResolvePort(ctx, protocolArg(args, 0), port)
			} else {
				svc, err = c.ResolveService(ctx, protocolArg(args, 1), args[0])
			}
			if svc != nil {
				if a.Output == "json" {
					if err := writeJSON(a.out, svc.Proto()); err != nil {
						return err
					}
				} else if err == nil {
					fmt.Fprintf(a.out, "%s %d/%s", svc.Name, svc.Port, svc.Protocol)
					if len(svc.Aliases) > 0 {
						fmt.Fprintf(a.out, " (also %s)", strings.Join(svc.Aliases, ", "))
					}
					fmt.Fprintf(a.out, " from the %s table\n", sourceText[svc.Source])
				}
			}
			return err
		}),
	}
	cmd.Flags().Uint16Var(&port, "port", 0, "look this port up instead of a name")
	return cmd
}

// protocolArg is args[i], or "" (the server's default, tcp) when absent.
func protocolArg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

var sourceText = map[client.ServiceSource]string{
	client.SourceSystem:  "system",
	client.SourceBuiltin: "built-in",
}

package service

import "context"

type callerKey struct{}

// WithCaller returns a context that carries the identity of the caller,
// such as a token's name or a client certificate's subject, set by the
// server's authentication. The target policy applies that caller's rules.
func WithCaller(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, callerKey{}, name)
}

// CallerFrom returns the caller's identity, or "" for an anonymous caller.
func CallerFrom(ctx context.Context) string {
	name, _ := ctx.Value(callerKey{}).(string)
	return name
}

type grantKey struct{}

// WithIdentityGrant lets the probes of ctx present the client identity
// called name whatever the target policy grants: for probes the operator
// configured, such as a module of the probe server's own.
func WithIdentityGrant(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, grantKey{}, name)
}

// granted reports whether ctx carries a grant of the identity name.
func granted(ctx context.Context, name string) bool {
	g, _ := ctx.Value(grantKey{}).(string)
	return g != "" && g == name
}

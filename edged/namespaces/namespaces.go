// Package namespaces carries the namespace of a request: in the context of
// the caller, and across ttrpc in request metadata under the same key
// containerd uses, so that containerd's shims and tools interoperate.
package namespaces

import (
	"context"
	"fmt"
	"os"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/edged/identifiers"
	"github.com/edged/edged/proto/rpc"
)

const (
	// Default is the namespace used when none is configured.
	Default = "default"
	// TTRPCHeader is the ttrpc metadata key that carries the namespace.
	TTRPCHeader = "containerd-namespace-ttrpc"
	// EnvVar names the environment variable clients read the namespace from.
	EnvVar = "EDGED_NAMESPACE"
)

type nsKey struct{}

// WithNamespace returns a context that carries ns for local use and as
// outgoing rpc metadata (ttrpc metadata on the wire).
func WithNamespace(ctx context.Context, ns string) context.Context {
	ctx = context.WithValue(ctx, nsKey{}, ns)
	md, ok := rpc.GetMetadata(ctx)
	if !ok {
		md = rpc.MD{}
	} else {
		md = md.Clone()
	}
	md.Set(TTRPCHeader, ns)
	return rpc.WithMetadata(ctx, md)
}

// Namespace returns the namespace of ctx, from the context value or from
// incoming rpc metadata (a request's ttrpc metadata).
func Namespace(ctx context.Context) (string, bool) {
	if ns, ok := ctx.Value(nsKey{}).(string); ok {
		return ns, true
	}
	if v, ok := rpc.GetMetadataValue(ctx, TTRPCHeader); ok {
		return v, true
	}
	return "", false
}

// NamespaceRequired returns the valid namespace of ctx or an
// ErrFailedPrecondition/ErrInvalidArgument error.
func NamespaceRequired(ctx context.Context) (string, error) {
	ns, ok := Namespace(ctx)
	if !ok || ns == "" {
		return "", fmt.Errorf("namespace is required (set it in ttrpc metadata %q): %w", TTRPCHeader, errdefs.ErrFailedPrecondition)
	}
	if err := identifiers.Validate("namespace", ns); err != nil {
		return "", err
	}
	return ns, nil
}

// StreamRequired returns the valid namespace of a streaming call: field,
// the namespace its request carries (ttrpc streams carry no metadata), or
// when field is empty the namespace of ctx as NamespaceRequired returns it.
func StreamRequired(ctx context.Context, field string) (string, error) {
	if field == "" {
		return NamespaceRequired(ctx)
	}
	if err := identifiers.Validate("namespace", field); err != nil {
		return "", err
	}
	return field, nil
}

// FromEnv returns the namespace named by EDGED_NAMESPACE, or Default.
func FromEnv() string {
	if ns := os.Getenv(EnvVar); ns != "" {
		return ns
	}
	return Default
}

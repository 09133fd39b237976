package registry

import (
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// The helper protocol. edged starts the helper with a pipe on its stdin and
// one on its stdout, and both sides write one JSON object per line:
//
//	edged → helper   Request (the first line), then Reply lines
//	helper → edged   Message lines; the last one carries Result or Error
//
// A Message with Blob asks edged to protect a blob from garbage collection
// (a lease) before the helper looks for it in the content store or writes
// it; the helper waits for the Reply with the same ID. The helper writes
// blobs into the content store itself (the store's ingests are files, with
// a flock per writer), so no blob bytes cross the pipes. The helper stops
// when its stdin is closed (edged gone), and edged kills it when the call's
// context ends. Lines are bounded by MaxLine.

// Operations of a Request.
const (
	OpPull = "pull"
	OpPush = "push"
)

// MaxLine bounds one protocol line, in bytes. Lines carry descriptors,
// progress and error messages, never blob data.
const MaxLine = 1 << 20

// Request is the first line edged sends: what the helper is to do.
type Request struct {
	Op string `json:"op"`
	// Store is the content store's root directory.
	Store string `json:"store"`
	// Ref is the image reference: pulled from, or pushed to.
	Ref string `json:"ref"`
	// Platform selects the manifest of a multi-platform image (pull).
	Platform string `json:"platform,omitempty"`
	// Target is the root descriptor pushed (push).
	Target *ocispec.Descriptor `json:"target,omitempty"`
	// Hosts, DockerConfig and UserAgent configure registry access.
	Hosts        map[string]HostConfig `json:"hosts,omitempty"`
	DockerConfig string                `json:"docker_config,omitempty"`
	UserAgent    string                `json:"user_agent,omitempty"`
	// Credentials, when set, authenticate to Ref's registry instead of the
	// docker config.
	Credentials *Credentials `json:"credentials,omitempty"`
	// BeforeBlob asks the helper to send a Blob message before it uses
	// each blob, and to wait for the Reply.
	BeforeBlob bool `json:"before_blob,omitempty"`
	// Retries, RetryBackoff, IdleTimeout and ChunkSize tune the registry
	// client (0: its defaults).
	Retries      int           `json:"retries,omitempty"`
	RetryBackoff time.Duration `json:"retry_backoff,omitempty"`
	IdleTimeout  time.Duration `json:"idle_timeout,omitempty"`
	ChunkSize    int64         `json:"chunk_size,omitempty"`
}

// Message is a line from the helper.
type Message struct {
	Progress *ProgressEvent `json:"progress,omitempty"`
	// Blob, with ID, asks for a Reply.
	Blob *ocispec.Descriptor `json:"blob,omitempty"`
	ID   uint64              `json:"id,omitempty"`
	// Result ends a successful pull (the pulled descriptors) or push.
	Result *Result `json:"result,omitempty"`
	// Error ends a failed call.
	Error *WireError `json:"error,omitempty"`
	// PeakRSSKiB, on the last message, is the helper's peak resident set
	// (VmHWM) after its start-up, and StartRSSKiB its peak during
	// start-up (before it paged out its code), for edged's log and the
	// benchmarks.
	PeakRSSKiB  int64 `json:"peak_rss_kib,omitempty"`
	StartRSSKiB int64 `json:"start_rss_kib,omitempty"`
}

// Result is what a pull found: the root descriptor (what the tag or digest
// points to) and the platform manifest's descriptor (equal to Root for
// single-platform images). A push leaves it empty.
type Result struct {
	Root     ocispec.Descriptor `json:"root"`
	Manifest ocispec.Descriptor `json:"manifest"`
}

// Reply answers a Blob message.
type Reply struct {
	ID    uint64     `json:"id"`
	Error *WireError `json:"error,omitempty"`
}

// WireError is an error with its kind (errdefs.Code), so that errors.Is
// works on the other side.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ToWire encodes err (nil for nil).
func ToWire(err error) *WireError {
	if err == nil {
		return nil
	}
	return &WireError{Code: errdefs.Code(err), Message: err.Error()}
}

// Err decodes the error (nil for nil).
func (e *WireError) Err() error {
	if e == nil {
		return nil
	}
	return errdefs.FromCode(e.Code, e.Message)
}

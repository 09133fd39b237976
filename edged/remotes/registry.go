package remotes

import "github.com/edged/edged/edged/registry"

// The registry client shares these types with package registry, which edged
// uses to run it in the edged-remote helper process.
type (
	// Reference is a parsed, normalized image reference.
	Reference = registry.Reference
	// Credentials authenticate to one registry host.
	Credentials = registry.Credentials
	// RegistryConfig is the per-registry configuration.
	RegistryConfig = registry.HostConfig
	// ProgressEvent reports the state of one blob.
	ProgressEvent = registry.ProgressEvent
	// ProgressStatus is the state of one blob in a ProgressEvent.
	ProgressStatus = registry.ProgressStatus
)

// Docker Hub names and blob states, as in package registry.
const (
	DockerHub     = registry.DockerHub
	DockerHubHost = registry.DockerHubHost

	ProgressResuming    = registry.ProgressResuming
	ProgressDownloading = registry.ProgressDownloading
	ProgressUploading   = registry.ProgressUploading
	ProgressExists      = registry.ProgressExists
	ProgressDone        = registry.ProgressDone
)

// ParseReference parses and normalizes an image reference
// (registry.ParseReference).
func ParseReference(s string) (Reference, error) { return registry.ParseReference(s) }

package testimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// DockerImage is one image of a docker-save archive.
type DockerImage struct {
	Image    *Built // LayerTars must be set (layers built from Files or Tar)
	RepoTags []string
}

// DockerSaveOptions tune WriteDockerSave.
type DockerSaveOptions struct {
	// BlobsLayout writes the Docker 25+ layout (blobs/sha256/<hex> files
	// referenced from manifest.json, no index.json) instead of the legacy
	// <id>/layer.tar and <config hex>.json files.
	BlobsLayout bool
	// SymlinkDuplicates writes a layer shared by two images once and the
	// second occurrence as a symlink to it, as legacy docker save does.
	SymlinkDuplicates bool
	// Gzip compresses the whole archive.
	Gzip bool
	// Extra entries are appended at the end.
	Extra []Entry
	// ManifestJSON replaces the generated manifest.json when not nil.
	ManifestJSON []byte
}

type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteDockerSave writes imgs as a "docker save" archive with uncompressed
// layers: layer directories, configs, then manifest.json and repositories.
func WriteDockerSave(w io.Writer, imgs []DockerImage, opts DockerSaveOptions) error {
	var zw *gzip.Writer
	if opts.Gzip {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		w = zw
	}
	tw := tar.NewWriter(w)
	written := map[string]string{} // layer diffID -> path written
	var manifest []dockerManifestEntry
	repos := map[string]map[string]string{}
	for _, im := range imgs {
		b := im.Image
		e := dockerManifestEntry{RepoTags: im.RepoTags}
		for i, raw := range b.LayerTars {
			diff := b.DiffIDs[i]
			var name string
			if opts.BlobsLayout {
				name = "blobs/sha256/" + diff.Encoded()
			} else {
				// legacy v1 layer IDs: a digest of the chain
				name = digest.FromString(string(b.DiffIDs[0])+string(diff)+string(rune(i))).Encoded() + "/layer.tar"
			}
			if prev, ok := written[string(diff)]; ok {
				if opts.SymlinkDuplicates && !opts.BlobsLayout && prev != name {
					if err := writeEntry(tw, Entry{Name: name, Type: tar.TypeSymlink, Linkname: "../" + prev}); err != nil {
						return err
					}
				} else {
					name = prev
				}
			} else {
				if !opts.BlobsLayout {
					if err := writeEntry(tw, Entry{Name: name[:64] + "/", Type: tar.TypeDir}); err != nil {
						return err
					}
					if err := writeEntry(tw, Entry{Name: name[:64] + "/VERSION", Data: []byte("1.0")}); err != nil {
						return err
					}
				}
				if err := writeEntry(tw, Entry{Name: name, Data: raw}); err != nil {
					return err
				}
				written[string(diff)] = name
			}
			e.Layers = append(e.Layers, name)
		}
		if opts.BlobsLayout {
			e.Config = "blobs/sha256/" + b.Config.Digest.Encoded()
		} else {
			e.Config = b.Config.Digest.Encoded() + ".json"
		}
		if _, ok := written[e.Config]; !ok {
			if err := writeEntry(tw, Entry{Name: e.Config, Data: b.ConfigRaw}); err != nil {
				return err
			}
			written[e.Config] = e.Config
		}
		manifest = append(manifest, e)
		for _, t := range im.RepoTags {
			repo, tag := t, "latest"
			if i := lastColon(t); i > 0 {
				repo, tag = t[:i], t[i+1:]
			}
			if repos[repo] == nil {
				repos[repo] = map[string]string{}
			}
			repos[repo][tag] = b.Config.Digest.Encoded()
		}
	}
	mraw := opts.ManifestJSON
	if mraw == nil {
		mraw, _ = json.Marshal(manifest)
	}
	if err := writeEntry(tw, Entry{Name: "manifest.json", Data: mraw}); err != nil {
		return err
	}
	if !opts.BlobsLayout {
		rraw, _ := json.Marshal(repos)
		if err := writeEntry(tw, Entry{Name: "repositories", Data: rraw}); err != nil {
			return err
		}
	}
	for _, e := range opts.Extra {
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		return zw.Close()
	}
	return nil
}

// DockerSaveBytes is WriteDockerSave into memory.
func DockerSaveBytes(imgs []DockerImage, opts DockerSaveOptions) []byte {
	var buf bytes.Buffer
	if err := WriteDockerSave(&buf, imgs, opts); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0 && s[i] != '/'; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}

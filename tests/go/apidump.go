// apidump prints the exported API of every package under a directory, as the Go toolchain sees it: go/build picks
// the files `go build` compiles for the target (build constraints, file-name suffixes, cgo), go/doc reads them.
// One "import-path<TAB>kind<TAB>name" line per func, method, type, const and var; then one
// "import-path<TAB>package<TAB>name" line per package. Methods promoted from embedded types are listed with
// -promoted, as go/doc shows them (those of unexported embedded types).
// Usage: go run apidump.go [-goos linux] [-goarch amd64] [-tags a,b] [-cgo] [-internal] [-promoted] ROOT MODULE_PATH
package main

import (
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	ctx := build.Default
	flag.StringVar(&ctx.GOOS, "goos", "linux", "target GOOS")
	flag.StringVar(&ctx.GOARCH, "goarch", "amd64", "target GOARCH")
	tags := flag.String("tags", "", "comma-separated build tags")
	flag.BoolVar(&ctx.CgoEnabled, "cgo", false, "cgo on")
	internal := flag.Bool("internal", false, "include internal/ packages")
	promoted := flag.Bool("promoted", false, "list methods promoted from embedded types")
	flag.Parse()
	if *tags != "" {
		ctx.BuildTags = strings.Split(*tags, ",")
	}
	root, module := flag.Arg(0), flag.Arg(1)
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		name := d.Name()
		if path != root && (name == "testdata" || name == "vendor" || (name == "internal" && !*internal) ||
			strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, path)
		importPath := module
		if rel != "." {
			importPath = module + "/" + filepath.ToSlash(rel)
		}
		info, err := ctx.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if info.Name == "main" {
			return nil
		}
		fset := token.NewFileSet()
		files := map[string]*ast.File{}
		for _, file := range append(info.GoFiles, info.CgoFiles...) {
			parsed, err := parser.ParseFile(fset, filepath.Join(path, file), nil, parser.ParseComments)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			files[file] = parsed
		}
		p := doc.New(&ast.Package{Name: info.Name, Files: files}, importPath, 0)
		emit := func(kind, name string) { fmt.Printf("%s\t%s\t%s\n", importPath, kind, name) }
		emit("package", info.Name)
		values := func(kind string, vs []*doc.Value) {
			for _, v := range vs {
				for _, n := range v.Names {
					if token.IsExported(n) {
						emit(kind, n)
					}
				}
			}
		}
		for _, f := range p.Funcs {
			emit("func", f.Name)
		}
		values("const", p.Consts)
		values("var", p.Vars)
		for _, t := range p.Types {
			emit("type", t.Name)
			for _, f := range t.Funcs {
				emit("func", f.Name)
			}
			for _, m := range t.Methods {
				if m.Level == 0 || *promoted {
					emit("method", t.Name+"."+m.Name)
				}
			}
			values("const", t.Consts)
			values("var", t.Vars)
		}
		return nil
	})
}

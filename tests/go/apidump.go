// apidump prints the exported API of every package under a directory, as the Go toolchain's go/doc sees it:
// one "import-path<TAB>kind<TAB>name" line per func, method (declared, not promoted), type, const and var.
// Usage: go run apidump.go ROOT MODULE_PATH [include-internal]
package main

import (
	"fmt"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	root, module := os.Args[1], os.Args[2]
	internal := len(os.Args) > 3
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		name := d.Name()
		if path != root && (name == "testdata" || name == "vendor" || (name == "internal" && !internal) ||
			strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, path)
		importPath := module
		if rel != "." {
			importPath = module + "/" + filepath.ToSlash(rel)
		}
		notTest := func(info fs.FileInfo) bool { return !strings.HasSuffix(info.Name(), "_test.go") }
		pkgs, err := parser.ParseDir(token.NewFileSet(), path, notTest, parser.ParseComments)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, pkg := range pkgs {
			p := doc.New(pkg, importPath, 0)
			emit := func(kind, name string) { fmt.Printf("%s\t%s\t%s\n", importPath, kind, name) }
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
					if m.Level == 0 {
						emit("method", t.Name+"."+m.Name)
					}
				}
				values("const", t.Consts)
				values("var", t.Vars)
			}
		}
		return nil
	})
}

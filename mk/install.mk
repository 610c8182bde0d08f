# make install / make uninstall for flux-pam-service (included by Makefile).
#
#   make install   [DESTDIR=] [PREFIX=/usr] [SYSCONFDIR=/etc] [LIBEXECDIR=...]
#   make uninstall (same variables: removes exactly what install put there)
#   make install-config    the IMP and perilog examples into the directories
#                          flux-security and flux-core read, each only if no
#                          file there has those tables already
#   make uninstall-config  removes them again if unchanged
#
# Nothing is fetched: the package is copied, not built with pip.  The layout
# is in doc/guide/admin.rst ("1. Install").
#
# flux's own directories are asked of flux-core and flux-security themselves
# (mk/fluxdirs.py): pkg-config (flux-core.pc, flux-security.pc; set
# PKG_CONFIG_PATH for a flux-core outside the default search path, e.g.
# /opt/flux/lib/pkgconfig), else the installed flux command (`flux config
# builtin`, FLUX=path/to/flux if it is not on PATH).  Only what neither knows
# falls back to the defaults below; a variable given on the command line
# always wins.  install prints where they came from.  Variables:
#
#   PREFIX          /usr
#   SYSCONFDIR      /etc
#   LIBEXECDIR      $(PREFIX)/libexec     flux's libexecdir is $(LIBEXECDIR)/flux
#   DATADIR         $(PREFIX)/share
#   MANDIR          $(DATADIR)/man
#   PYTHON          /usr/bin/python3      the Python flux and the drop-ins run
#                                         (Debian's); set on the command line
#                                         only: a PYTHON in the environment (a
#                                         virtualenv's) is not used
#   PYTHONDIR       where PYTHON finds packages for PREFIX (mk/pythondir.py)
#   FLUXLIBEXECDIR  flux-core's fluxlibexecdir, else $(LIBEXECDIR)/flux
#                                         cmd/, prolog.d/, housekeeping.d/,
#                                         modprobe/rc1.d/
#   FLUXDATADIR     flux-core's fluxdatadir, else $(DATADIR)/flux
#                                         modprobe/modprobe.d/
#   FLUXMODDIR      flux-core's fluxmoddir, else $(PREFIX)/lib/flux/modules
#                                         pam.py, the broker module
#                                         (flux's module_path: `flux modprobe`
#                                         loads `pam` by name from there)
#   FLUXCONFDIR     flux-core's fluxconfdir, else $(SYSCONFDIR)/flux
#                                         system/conf.d/pam.toml
#   IMPCONFDIR      flux-security's $sysconfdir/flux/imp/conf.d, else
#                   $(FLUXCONFDIR)/imp/conf.d     (install-config)
#   PKG_CONFIG      pkg-config
#   FLUX            flux                  the installed flux command
#   PAMDIR          the system's PAM module directory, found by pam/Makefile
#                   (pam_flux.so; see there, and for flux-core's discovery)
#   TMPFILESDIR     $(PREFIX)/lib/tmpfiles.d
#   POLKITRULESDIR  $(DATADIR)/polkit-1/rules.d  (polkitd reads only
#                   /usr/share/polkit-1/rules.d and /etc/polkit-1/rules.d)
#   DOCDIR          $(DATADIR)/doc/flux-pam-service   (examples/ below it)
#   RST2MAN         rst2man               (Debian: python3-docutils)
#
# flux finds `flux pam` only if FLUXLIBEXECDIR is its own libexecdir (or is
# in FLUX_EXEC_PATH), which is why it is asked of flux-core.
#
# The examples are installed with the paths of these directories in place of
# those of a flux-core in /usr.  $(FLUXCONFDIR)/system/conf.d/pam.toml is
# installed only if absent; uninstall removes it only if it is unchanged.
# Paths must not contain blanks or commas.

PREFIX ?= /usr
SYSCONFDIR ?= /etc
PKG_CONFIG ?= pkg-config
FLUX ?= flux
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
PYTHON = /usr/bin/python3
PYTHONDIR ?= $(shell $(PYTHON) $(CURDIR)/mk/pythondir.py $(PREFIX))
# flux-core's and flux-security's directories, asked only for the goals that
# use them (see above)
FLUXDIRS_GOALS = install uninstall install-config uninstall-config
ifneq ($(filter $(FLUXDIRS_GOALS),$(MAKECMDGOALS)),)
FLUXDIRS_CMD = PKG_CONFIG_PATH="$(PKG_CONFIG_PATH)" $(PYTHON) $(CURDIR)/mk/fluxdirs.py \
  "$(PKG_CONFIG)" "$(FLUX)"
FLUXDIRS := $(shell $(FLUXDIRS_CMD))
fluxdir_name = $(firstword $(subst =, ,$(1)))
$(foreach w,$(FLUXDIRS),$(eval $(call fluxdir_name,$(w)) ?= $(patsubst $(call fluxdir_name,$(w))=%,%,$(w))))
FLUXDIRS_FROM := $(shell $(FLUXDIRS_CMD) --explain)
endif
FLUXLIBEXECDIR ?= $(LIBEXECDIR)/flux
FLUXDATADIR ?= $(DATADIR)/flux
FLUXMODDIR ?= $(PREFIX)/lib/flux/modules
FLUXCONFDIR ?= $(SYSCONFDIR)/flux
IMPCONFDIR ?= $(FLUXCONFDIR)/imp/conf.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
POLKITRULESDIR ?= $(DATADIR)/polkit-1/rules.d
DOCDIR ?= $(DATADIR)/doc/flux-pam-service
EXAMPLESDIR ?= $(DOCDIR)/examples
RST2MAN ?= rst2man

BUILDDIR = $(CURDIR)/build

PY_SOURCES := $(sort $(shell find flux_pam_service -name '*.py' \
                               -not -path '*/__pycache__/*' 2>/dev/null))
MODPROBE_TOML := $(sort $(wildcard etc/flux/modprobe/modprobe.d/*.toml))
MODPROBE_RC1 := $(sort $(wildcard etc/flux/modprobe/rc1.d/*.py))
MODPROBE_RC3 := $(sort $(wildcard etc/flux/modprobe/rc3.d/*.py))
MAN_PAGES := $(BUILDDIR)/man/flux-pam.1 $(BUILDDIR)/man/flux-config-pam.5 \
             $(BUILDDIR)/man/pam_flux.8
CONF_EXAMPLE = etc/flux/system/conf.d/pam.toml
CONF_DEST = $(FLUXCONFDIR)/system/conf.d/pam.toml
# install-config: installed example, destination, tables that another file
# of the destination directory must not have already
PERILOG_DEST = $(FLUXCONFDIR)/system/conf.d/perilog.toml
IMP_DEST = $(IMPCONFDIR)/pam.toml
CONFIG_TABLE = \
  $(EXAMPLESDIR)/perilog.toml,$(PERILOG_DEST),job-manager.prolog:job-manager.housekeeping \
  $(EXAMPLESDIR)/imp-pam.toml,$(IMP_DEST),run.prolog:run.housekeeping
# The examples name the paths of a flux-core in /usr; install them with the
# paths of this one.
EXAMPLE_SED = -e 's|/usr/libexec/flux/|$(FLUXLIBEXECDIR)/|g' \
              -e 's|/etc/flux/imp/conf.d|$(IMPCONFDIR)|g' \
              -e 's|/etc/flux/system/conf.d|$(FLUXCONFDIR)/system/conf.d|g'

# source,destination,mode: every file install copies (except CONF_DEST).
INSTALL_TABLE = \
  $(foreach f,$(PY_SOURCES),$(f),$(PYTHONDIR)/$(f),0644) \
  $(BUILDDIR)/flux-pam.py,$(FLUXLIBEXECDIR)/cmd/flux-pam.py,0755 \
  libexec/prolog.d/flux-pam-prolog,$(FLUXLIBEXECDIR)/prolog.d/flux-pam-prolog,0755 \
  libexec/housekeeping.d/flux-pam-housekeeping,$(FLUXLIBEXECDIR)/housekeeping.d/flux-pam-housekeeping,0755 \
  modules/pam.py,$(FLUXMODDIR)/pam.py,0644 \
  $(foreach f,$(MODPROBE_TOML),$(f),$(FLUXDATADIR)/modprobe/modprobe.d/$(notdir $(f)),0644) \
  $(foreach f,$(MODPROBE_RC1),$(f),$(FLUXLIBEXECDIR)/modprobe/rc1.d/$(notdir $(f)),0644) \
  $(foreach f,$(MODPROBE_RC3),$(f),$(FLUXLIBEXECDIR)/modprobe/rc3.d/$(notdir $(f)),0644) \
  etc/tmpfiles.d/flux-pam.conf,$(TMPFILESDIR)/flux-pam.conf,0644 \
  etc/polkit-1/rules.d/60-flux-pam.rules,$(POLKITRULESDIR)/60-flux-pam.rules,0644 \
  $(CONF_EXAMPLE),$(EXAMPLESDIR)/pam.toml,0644 \
  etc/flux/system/perilog.toml,$(EXAMPLESDIR)/perilog.toml,0644 \
  etc/flux/imp/conf.d/pam.toml,$(EXAMPLESDIR)/imp-pam.toml,0644 \
  etc/pam.d/sshd,$(EXAMPLESDIR)/pam.d-sshd,0644 \
  etc/security/access-flux.conf,$(EXAMPLESDIR)/access-flux.conf,0644 \
  doc/guide/admin.rst,$(DOCDIR)/admin-guide.rst,0644 \
  $(BUILDDIR)/man/flux-pam.1,$(MANDIR)/man1/flux-pam.1,0644 \
  $(BUILDDIR)/man/flux-config-pam.5,$(MANDIR)/man5/flux-config-pam.5,0644 \
  $(BUILDDIR)/man/pam_flux.8,$(MANDIR)/man8/pam_flux.8,0644

# Directories that are ours alone: uninstall removes them once empty.
OWN_DIRS = $(EXAMPLESDIR) $(DOCDIR)

.PHONY: install uninstall man install-check-sources install-config uninstall-config

man: $(MAN_PAGES)

$(BUILDDIR)/man/%.1: doc/man1/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

$(BUILDDIR)/man/%.5: doc/man5/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

$(BUILDDIR)/man/%.8: doc/man8/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

# Rebuilt every time: it records PYTHONDIR, which may differ between runs.
$(BUILDDIR)/flux-pam.py: libexec/cmd/flux-pam.py.in FORCE
	@mkdir -p $(@D)
	sed 's|@PYTHONDIR@|$(PYTHONDIR)|g' $< > $@

FORCE:

# Refuse to install half a product: every source must be there.
install-check-sources:
	@test -n "$(MODPROBE_TOML)" || { echo "install: no etc/flux/modprobe/modprobe.d/*.toml" >&2; exit 1; }
	@test -n "$(MODPROBE_RC1)" || { echo "install: no etc/flux/modprobe/rc1.d/*.py" >&2; exit 1; }
	@missing=; for t in $(INSTALL_TABLE); do src=$${t%%,*}; \
	  case $$src in $(BUILDDIR)/*) continue;; esac; \
	  test -f "$$src" || missing="$$missing $$src"; done; \
	 if test -n "$$missing"; then echo "install: missing source files:$$missing" >&2; exit 1; fi

install: install-check-sources $(BUILDDIR)/flux-pam.py $(MAN_PAGES)
	@echo "  DIRS    $(FLUXDIRS_FROM)"
	@echo "          libexecdir $(FLUXLIBEXECDIR), confdir $(FLUXCONFDIR), IMP config $(IMPCONFDIR)"
	@set -e; for t in $(INSTALL_TABLE); do \
	  src=$${t%%,*}; rest=$${t#*,}; dst=$${rest%,*}; mode=$${rest##*,}; \
	  mkdir -p "$(DESTDIR)$$(dirname $$dst)"; \
	  echo "  INSTALL $$dst"; \
	  case $$dst in \
	  $(EXAMPLESDIR)/*) sed $(EXAMPLE_SED) "$$src" >"$(DESTDIR)$$dst"; \
	                    chmod $$mode "$(DESTDIR)$$dst";; \
	  *) install -m $$mode "$$src" "$(DESTDIR)$$dst";; \
	  esac; \
	done
	@# bytecode for the drop-ins, which the IMP runs for every job, also on a
	@# read-only /usr; checked-hash survives mtime changes
	@echo "  PYC     $(PYTHONDIR)/flux_pam_service"
	@$(PYTHON) -m compileall -q --invalidation-mode checked-hash \
	  -d "$(PYTHONDIR)/flux_pam_service" "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"
	@if test -e "$(DESTDIR)$(CONF_DEST)"; then \
	  echo "  KEEP    $(CONF_DEST) (exists; the shipped one is $(EXAMPLESDIR)/pam.toml)"; \
	else \
	  mkdir -p "$(DESTDIR)$(dir $(CONF_DEST))"; \
	  echo "  INSTALL $(CONF_DEST)"; \
	  install -m 0644 $(CONF_EXAMPLE) "$(DESTDIR)$(CONF_DEST)"; \
	fi
	@$(MAKE) --no-print-directory -C pam install DESTDIR="$(DESTDIR)"

uninstall:
	@$(MAKE) --no-print-directory -C pam uninstall DESTDIR="$(DESTDIR)"
	@for t in $(INSTALL_TABLE); do \
	  rest=$${t#*,}; dst=$${rest%,*}; \
	  if test -e "$(DESTDIR)$$dst" || test -L "$(DESTDIR)$$dst"; then \
	    echo "  RM      $$dst"; rm -f "$(DESTDIR)$$dst"; fi; \
	done
	@if test -d "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"; then \
	  echo "  RM      $(PYTHONDIR)/flux_pam_service"; \
	  rm -rf "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"; fi
	@if test -f "$(DESTDIR)$(CONF_DEST)"; then \
	  if cmp -s $(CONF_EXAMPLE) "$(DESTDIR)$(CONF_DEST)"; then \
	    echo "  RM      $(CONF_DEST)"; rm -f "$(DESTDIR)$(CONF_DEST)"; \
	  else echo "  KEEP    $(CONF_DEST) (changed locally)"; fi; fi
	@for d in $(OWN_DIRS); do rmdir "$(DESTDIR)$$d" 2>/dev/null || :; done

# Each example only where no file exists by that name and no other file of
# the directory has its tables (a key set twice is an error for the IMP, and
# silently overridden by the broker): then the site merges by hand.
install-config:
	@set -e; for t in $(CONFIG_TABLE); do \
	  src=$${t%%,*}; rest=$${t#*,}; dst=$${rest%,*}; tables=$${rest##*,}; \
	  dir=$$(dirname $$dst); \
	  test -f "$(DESTDIR)$$src" || { echo "install-config: $$src is missing: make install first" >&2; exit 1; }; \
	  if test -e "$(DESTDIR)$$dst"; then echo "  KEEP    $$dst (exists)"; continue; fi; \
	  pattern="^[[:space:]]*\\[($$(echo $$tables | sed 's/\./\\./g; s/:/|/g'))\\]"; \
	  other=$$(grep -lsE "$$pattern" "$(DESTDIR)$$dir"/*.toml || :); \
	  if test -n "$$other"; then \
	    echo "  SKIP    $$dst: $$(echo $$other | sed 's|$(DESTDIR)||g') has [$$(echo $$tables | sed 's/:/] or [/')] already: merge $$src by hand"; \
	    continue; fi; \
	  mkdir -p "$(DESTDIR)$$dir"; \
	  echo "  INSTALL $$dst"; \
	  install -m 0644 "$(DESTDIR)$$src" "$(DESTDIR)$$dst"; \
	done

uninstall-config:
	@for t in $(CONFIG_TABLE); do \
	  src=$${t%%,*}; rest=$${t#*,}; dst=$${rest%,*}; \
	  if test -f "$(DESTDIR)$$dst"; then \
	    if cmp -s "$(DESTDIR)$$src" "$(DESTDIR)$$dst"; then \
	      echo "  RM      $$dst"; rm -f "$(DESTDIR)$$dst"; \
	    else echo "  KEEP    $$dst (changed locally)"; fi; fi; \
	done

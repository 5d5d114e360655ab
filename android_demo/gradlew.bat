@rem Gradle wrapper launcher for Windows (short form; `gradle wrapper` regenerates it with the jar).
@echo off
setlocal
set APP_HOME=%~dp0
set WRAPPER_JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%WRAPPER_JAR%" (
  echo gradlew: %WRAPPER_JAR% is missing. 1>&2
  echo Open the project in Android Studio, or run: gradle wrapper --gradle-version 8.11.1 1>&2
  exit /b 1
)
set JAVACMD=java
if defined JAVA_HOME set JAVACMD=%JAVA_HOME%\bin\java
"%JAVACMD%" -Xmx64m -Xms64m %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%WRAPPER_JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
